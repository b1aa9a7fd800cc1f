package stream

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// RunEmbedded starts a nats-server inside this process with JetStream on,
// listening on host:port (port -1 picks a free one) and storing streams under
// dir. handoff dev and the tests use it; production runs a real cluster.
func RunEmbedded(host string, port int, dir string) (*server.Server, error) {
	srv, err := server.NewServer(&server.Options{
		ServerName: "handoff-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true,
		// Keep JetStream's reservations modest: dev machines and CI are small.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  8 << 30,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s:%d: not ready after 10s", host, port)
	}
	return srv, nil
}
