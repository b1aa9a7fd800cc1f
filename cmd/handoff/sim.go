package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/handoff-dev/handoff/livechat/livechatsim"
)

func runLiveChatSim(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		lg   logging
		addr string
		opts livechatsim.Options
	)
	f := newFlags("livechat-sim", "[flags]", "Run the LiveChat simulator: the LiveChat Web API, accounts and webhooks from\nmemory, plus the /_sim/ control API (chats, agent messages, closes, faults,\nstats). See docs/livechat.md for a curl walkthrough.")
	lg.register(f)
	f.String(&addr, "addr", "LIVECHAT_SIM_ADDR", "127.0.0.1:8091", "address to listen on")
	f.String(&opts.AgentToken, "agent-token", "LIVECHAT_SIM_AGENT_TOKEN", "", "the only agent bearer token accepted besides issued ones (empty: any)")
	f.Duration(&opts.TokenLifetime, "token-lifetime", "LIVECHAT_SIM_TOKEN_LIFETIME", livechatsim.DefaultTokenLifetime, "lifetime of issued tokens")
	f.String(&opts.OrganizationID, "organization-id", "LIVECHAT_SIM_ORGANIZATION_ID", livechatsim.DefaultOrganizationID, "organization ID the simulator answers with")
	f.Int(&opts.LicenseID, "license-id", "LIVECHAT_SIM_LICENSE_ID", 0, "the only license ID known (0: any)")
	f.String(&opts.ClientID, "client-id", "LIVECHAT_SIM_CLIENT_ID", "", "the only client ID accepted in token requests (empty: any)")
	if err := f.parse(args, stdout); err != nil {
		return err
	}
	log, err := lg.logger()
	if err != nil {
		return err
	}
	opts.Logger = log
	sim := livechatsim.New(opts)
	defer sim.Close()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("livechat-sim: %w", err)
	}
	return serveUntilDone(ctx, l, sim, func() {
		fmt.Fprintf(stdout, "LiveChat simulator on http://%s (API and accounts; control API under /_sim/)\n", l.Addr())
	})
}

// serveUntilDone serves h on l until ctx ends, then shuts down gracefully.
func serveUntilDone(ctx context.Context, l net.Listener, h http.Handler, started func()) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	started()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
