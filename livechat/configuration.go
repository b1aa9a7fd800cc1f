package livechat

import (
	"context"
	"fmt"
)

// Webhook is a webhook registration of the Configuration API.
type Webhook struct {
	ID          string `json:"id,omitempty"`
	URL         string `json:"url"`
	Description string `json:"description,omitempty"`
	Action      string `json:"action"`
	// SecretKey comes back in every delivery; compare it with
	// WebhookDelivery.CheckSecret.
	SecretKey     string `json:"secret_key"`
	OwnerClientID string `json:"owner_client_id"`
	// Type is "license" (default) or "bot".
	Type           string         `json:"type"`
	Filters        map[string]any `json:"filters,omitempty"`
	AdditionalData []string       `json:"additional_data,omitempty"`
}

// ownerClientID defaults a registration's owner to the configured app.
func (c *Client) ownerClientID(id string) string {
	if id == "" {
		return c.cfg.ClientID
	}
	return id
}

// RegisterWebhook registers w for one action and returns its ID. A
// registration cannot be edited: unregister and register again.
// OwnerClientID defaults to Config.ClientID and Type to "license".
// agentToken may also be a Personal Access Token as "Basic <base64>".
func (c *Client) RegisterWebhook(ctx context.Context, agentToken string, w Webhook) (string, error) {
	w.ID = ""
	w.OwnerClientID = c.ownerClientID(w.OwnerClientID)
	if w.Type == "" {
		w.Type = "license"
	}
	var id string
	err := c.call(ctx, "configuration", "register_webhook", agentToken, w, func(b []byte) (err error) {
		id, err = decodeWebhookID(b)
		return err
	})
	return id, err
}

// ListWebhooks returns the app's registrations.
func (c *Client) ListWebhooks(ctx context.Context, agentToken string) ([]Webhook, error) {
	var out []Webhook
	err := c.call(ctx, "configuration", "list_webhooks", agentToken,
		map[string]string{"owner_client_id": c.cfg.ClientID}, func(b []byte) (err error) {
			out, err = decodeWebhooks(b)
			return err
		})
	return out, err
}

// UnregisterWebhook removes a registration.
func (c *Client) UnregisterWebhook(ctx context.Context, agentToken, id string) error {
	if id == "" {
		return fmt.Errorf("livechat: unregister_webhook: empty id")
	}
	return c.call(ctx, "configuration", "unregister_webhook", agentToken,
		map[string]string{"id": id, "owner_client_id": c.cfg.ClientID}, decodeEmpty)
}

// EnableLicenseWebhook turns the app's license webhooks on; registered
// webhooks do not fire before this.
func (c *Client) EnableLicenseWebhook(ctx context.Context, agentToken string) error {
	return c.call(ctx, "configuration", "enable_license_webhook", agentToken,
		map[string]string{"owner_client_id": c.cfg.ClientID}, decodeEmpty)
}

// LicenseWebhooksEnabled reports whether the app's license webhooks are on
// (get_license_webhooks_state).
func (c *Client) LicenseWebhooksEnabled(ctx context.Context, agentToken string) (bool, error) {
	var on bool
	err := c.call(ctx, "configuration", "get_license_webhooks_state", agentToken,
		map[string]string{"owner_client_id": c.cfg.ClientID}, func(b []byte) error {
			if err := requireObject(b); err != nil {
				return err
			}
			var r struct {
				Enabled *bool `json:"license_webhooks_enabled"`
			}
			if err := decodeObject(b, &r); err != nil {
				return err
			}
			if r.Enabled == nil {
				return errMissing("license_webhooks_enabled")
			}
			on = *r.Enabled
			return nil
		})
	return on, err
}
