package livechat

import (
	"context"
	"fmt"
	"strings"
)

// Webhook is a webhook registration of the Configuration API.
type Webhook struct {
	ID          string `json:"id,omitempty"`
	URL         string `json:"url"`
	Description string `json:"description,omitempty"`
	Action      string `json:"action"`
	// SecretKey comes back in every delivery; compare it with
	// WebhookDelivery.CheckSecret.
	SecretKey string `json:"secret_key"`
	// OwnerClientID is sent only with a Personal Access Token: with a
	// bearer token LiveChat takes the owner from the token.
	OwnerClientID string `json:"owner_client_id,omitempty"`
	// Type is "license" (default) or "bot".
	Type           string         `json:"type"`
	Filters        map[string]any `json:"filters,omitempty"`
	AdditionalData []string       `json:"additional_data,omitempty"`
}

// isPAT reports whether the credentials are a Personal Access Token
// ("Basic ..."), which belongs to no app: only then does LiveChat need
// owner_client_id to know whose webhooks are meant.
func isPAT(token string) bool { return strings.HasPrefix(token, "Basic ") }

// owner is the body naming the app whose webhooks a call manages: empty
// for a bearer token, Config.ClientID for a Personal Access Token.
func (c *Client) owner(token string) map[string]string {
	if isPAT(token) {
		return map[string]string{"owner_client_id": c.cfg.ClientID}
	}
	return map[string]string{}
}

// RegisterWebhook registers w for one action and returns its ID. A
// registration cannot be edited: unregister and register again. Type
// defaults to "license". agentToken may also be a Personal Access Token
// as "Basic <base64>"; then OwnerClientID defaults to Config.ClientID.
func (c *Client) RegisterWebhook(ctx context.Context, agentToken string, w Webhook) (string, error) {
	w.ID = ""
	switch {
	case !isPAT(agentToken):
		w.OwnerClientID = ""
	case w.OwnerClientID == "":
		w.OwnerClientID = c.cfg.ClientID
	}
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
	err := c.call(ctx, "configuration", "list_webhooks", agentToken, c.owner(agentToken), func(b []byte) (err error) {
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
	body := c.owner(agentToken)
	body["id"] = id
	return c.call(ctx, "configuration", "unregister_webhook", agentToken, body, decodeEmpty)
}

// EnableLicenseWebhooks turns the app's license webhooks on
// (enable_license_webhooks); registered webhooks do not fire before this.
func (c *Client) EnableLicenseWebhooks(ctx context.Context, agentToken string) error {
	return c.call(ctx, "configuration", "enable_license_webhooks", agentToken, c.owner(agentToken), decodeEmpty)
}

// DisableLicenseWebhooks turns the app's license webhooks off
// (disable_license_webhooks); registrations stay.
func (c *Client) DisableLicenseWebhooks(ctx context.Context, agentToken string) error {
	return c.call(ctx, "configuration", "disable_license_webhooks", agentToken, c.owner(agentToken), decodeEmpty)
}

// LicenseWebhooksEnabled reports whether the app's license webhooks are on
// (get_license_webhooks_state).
func (c *Client) LicenseWebhooksEnabled(ctx context.Context, agentToken string) (bool, error) {
	var on bool
	err := c.call(ctx, "configuration", "get_license_webhooks_state", agentToken, c.owner(agentToken), func(b []byte) error {
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
