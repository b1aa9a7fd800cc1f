package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/handoff-dev/handoff/stream"
)

func runDev(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		lg       logging
		host     string
		natsPort int
		dataDir  string
	)
	f := newFlags("dev", "[flags]", "Run handoff on embedded defaults for local development: an embedded NATS\nserver with JetStream and the streams set up. Stop with Ctrl-C.")
	lg.register(f)
	f.String(&host, "host", "HANDOFF_DEV_HOST", "127.0.0.1", "address the embedded servers listen on")
	f.Int(&natsPort, "nats-port", "HANDOFF_DEV_NATS_PORT", 4222, "port of the embedded NATS server (-1 picks a free one)")
	f.String(&dataDir, "data-dir", "HANDOFF_DEV_DATA_DIR", "", "where JetStream keeps its files (default: a temporary directory removed on exit)")
	if err := f.parse(args, stdout); err != nil {
		return err
	}
	log, err := lg.logger()
	if err != nil {
		return err
	}
	if dataDir == "" {
		dir, err := os.MkdirTemp("", "handoff-dev-")
		if err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		defer os.RemoveAll(dir)
		dataDir = dir
	}
	srv, err := stream.RunEmbedded(host, natsPort, dataDir)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	defer srv.Shutdown()
	url := srv.ClientURL()
	nc, js, err := connect(url, "handoff-dev", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	changes, err := stream.Setup(ctx, js, stream.DefaultConfig())
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	for _, c := range changes {
		log.Info("stream setup", "name", c.Name, "action", c.Action)
	}
	fmt.Fprintf(stdout, "handoff dev is running\n  NATS: %s (JetStream data in %s)\nPress Ctrl-C to stop.\n", url, dataDir)
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}
