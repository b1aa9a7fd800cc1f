// Command handoff moves a chatbot conversation to a human agent in LiveChat
// and back. One binary, several subcommands; this package only wires the
// packages together.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout io.Writer) error
}

var commands = map[string]command{
	"dev":          {"run everything in one process on embedded defaults (NATS and its KV store or Redis, simulator, worker, gateway)", runDev},
	"setup":        {"create or update the JetStream streams and the worker consumer (idempotent)", runSetup},
	"publish":      {"publish one event, e.g. to try a handoff without a bot", runPublish},
	"worker":       {"consume events and deliver them to LiveChat", runWorker},
	"dlq":          {"list and replay dead letters", runDLQ},
	"gateway":      {"serve the Dialogflow, Google Chat and REST ingress", runGateway},
	"livechat":     {"livechat login: authorize the LiveChat app and keep its refresh token for the worker", runLiveChat},
	"livechat-sim": {"run the LiveChat simulator", runLiveChatSim},
	"version":      {"print the version", runVersion},
}

// stoppedWhileStarting is err, or nil when it is the context's own
// cancellation: a SIGTERM that comes while a long-running command is still
// connecting or setting up (a rollout, a scale-down right after a
// scale-up) stops it as cleanly as one that comes later, with exit 0 and
// not what a supervisor reports as a crash.
func stoppedWhileStarting(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "handoff hands a chatbot conversation to a human agent in LiveChat and back.\n\nUsage: handoff <command> [flags]\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-13s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'handoff <command> --help' for its flags and environment variables.\n")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "handoff: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.run(ctx, args[1:], stdout)
	var ue usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "handoff: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "handoff: %v\n", err)
		return 1
	}
}

func runVersion(_ context.Context, args []string, stdout io.Writer) error {
	f := newFlags("version", "", "Print the version of handoff and of Go it was built with.")
	if err := f.parse(args, stdout); err != nil {
		return err
	}
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
	}
	fmt.Fprintf(stdout, "handoff %s (%s)\n", version, goVersion)
	return nil
}
