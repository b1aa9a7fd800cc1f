package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/handoff-dev/handoff/livechat"
)

// reversePathActions are the webhooks the reverse path needs, with the
// filters that keep our own customer's sends and other apps' chats out.
var reversePathActions = []struct {
	action  string
	filters map[string]any
}{
	// incoming_event without an author filter: routing notices
	// (system messages, e.g. no agent available) must arrive too; the
	// gateway drops our own customer's events itself.
	{livechat.ActionIncomingEvent, map[string]any{"only_my_chats": true}},
	{livechat.ActionChatDeactivated, map[string]any{"only_my_chats": true}},
	{livechat.ActionIncomingChat, map[string]any{"only_my_chats": true}},
	{livechat.ActionUserAdded, map[string]any{"only_my_chats": true}},
	{livechat.ActionChatTransferred, map[string]any{"only_my_chats": true}},
}

// registerWebhooks makes sure LiveChat sends the reverse path's webhooks to
// url with secret: a registration that is already there is left alone, one
// with another secret or other filters is replaced (LiveChat cannot edit
// one), and the
// license's webhooks are enabled. Running it twice changes nothing.
func registerWebhooks(ctx context.Context, lc *livechat.Client, url, secret string, out io.Writer) error {
	if secret == "" {
		return usageError{errors.New("setup: --livechat-webhook-url needs --livechat-webhook-secret (the gateway's HANDOFF_GATEWAY_LIVECHAT_WEBHOOK_SECRET)")}
	}
	// One token for this run; setup is a one-shot, far from LiveChat's 25
	// live tokens per app and user.
	tok, err := lc.RefreshAgentToken(ctx)
	if err != nil {
		return fmt.Errorf("setup: agent token: %w", err)
	}
	have, err := lc.ListWebhooks(ctx, tok.AccessToken)
	if err != nil {
		return fmt.Errorf("setup: list webhooks: %w", err)
	}
	for _, want := range reversePathActions {
		action := "registered"
		for _, h := range have {
			if h.URL != url || h.Action != want.action {
				continue
			}
			if h.SecretKey == secret && fmt.Sprint(h.Filters) == fmt.Sprint(want.filters) {
				action = "unchanged"
				break
			}
			if err := lc.UnregisterWebhook(ctx, tok.AccessToken, h.ID); err != nil {
				return fmt.Errorf("setup: replace webhook %s: %w", want.action, err)
			}
			action = "updated"
		}
		if action != "unchanged" {
			_, err := lc.RegisterWebhook(ctx, tok.AccessToken, livechat.Webhook{
				URL: url, Action: want.action, SecretKey: secret, Description: "handoff reverse path",
				Type: "license", Filters: want.filters,
			})
			if err != nil {
				return fmt.Errorf("setup: register webhook %s: %w", want.action, err)
			}
		}
		fmt.Fprintf(out, "%-16s %s\n", "webhook "+want.action, action)
	}
	if err := lc.EnableLicenseWebhooks(ctx, tok.AccessToken); err != nil {
		return fmt.Errorf("setup: enable license webhooks: %w", err)
	}
	return nil
}
