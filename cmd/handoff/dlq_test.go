package main

import (
	"context"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/stream"
	"github.com/handoff-dev/handoff/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestDLQListAndReplay puts a dead letter where the worker would, then
// lists it and replays it with the CLI: it is back on its conversation's
// inbound subject, with the replay header, and gone from the DLQ.
func TestDLQListAndReplay(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect()
	ctx := context.Background()
	if _, err := stream.Setup(ctx, js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	conv := "projects/p/agent/sessions/s 1"
	ev, err := handoff.NewEvent(handoff.TypeMessageUser, conv, handoff.UserMessage{Text: "rejected"})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := ev.Marshal()
	m := nats.NewMsg(stream.DLQSubject(conv))
	m.Data = body
	m.Header.Set("Ce-Type", string(ev.Type))
	m.Header.Set(worker.HeaderDLQReason, "livechat_validation")
	m.Header.Set(worker.HeaderDLQError, "livechat: send_event: validation (HTTP 400)")
	m.Header.Set(worker.HeaderDLQSubject, stream.InSubject(conv))
	m.Header.Set(worker.HeaderDLQSequence, "7")
	m.Header.Set(worker.HeaderDLQDelivered, "1")
	m.Header.Set(worker.HeaderDLQEventID, ev.ID)
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}

	code, out, errs := runCLI(t, "dlq", "list", "--nats-url", n.URL())
	if code != 0 || !strings.Contains(out, ev.ID) || !strings.Contains(out, "livechat_validation") || !strings.Contains(out, conv) {
		t.Fatalf("dlq list: code %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, "dlq", "replay", "--nats-url", n.URL(), "--id", ev.ID)
	if code != 0 || !strings.Contains(out, "replayed") {
		t.Fatalf("dlq replay: code %d\n%s%s", code, out, errs)
	}
	in, _ := js.Stream(ctx, stream.InStream)
	got, err := in.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(stream.InSubject(conv)))
	if err != nil {
		t.Fatalf("replayed event not on the inbound subject: %v", err)
	}
	back, err := handoff.UnmarshalEvent(got.Data)
	if err != nil || back.ID != ev.ID || got.Header.Get(worker.HeaderReplay) == "" || got.Header.Get(worker.HeaderDLQReason) != "" {
		t.Fatalf("replayed event %+v headers %v, %v", back, got.Header, err)
	}
	if code, out, _ := runCLI(t, "dlq", "list", "--nats-url", n.URL()); code != 0 || !strings.Contains(out, "no dead letters") {
		t.Fatalf("after replay: %s", out)
	}
	if code, _, errs := runCLI(t, "dlq", "replay", "--nats-url", n.URL()); code != 2 || !strings.Contains(errs, "--id, --seq or --all") {
		t.Fatalf("replay without a selector: code %d %s", code, errs)
	}
}

// An outbound dead letter (an agent's reply the user's surface refused) is
// listed as outbound and replayed onto its reverse subject, where the
// outbound consumer picks it up again.
func TestDLQOutboundDirection(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect()
	ctx := context.Background()
	if _, err := stream.Setup(ctx, js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	conv := "spaces/AAA/threads/t1"
	ev, err := handoff.NewEvent(handoff.TypeMessageAgent, conv, handoff.AgentMessage{Text: "late reply", ChatID: "C1"})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := ev.Marshal()
	m := nats.NewMsg(stream.DLQSubject(conv))
	m.Data = body
	m.Header.Set("Ce-Type", string(ev.Type))
	m.Header.Set(worker.HeaderDLQReason, "budget_exhausted")
	m.Header.Set(worker.HeaderDLQError, "undelivered after 24h: google_chat_503")
	m.Header.Set(worker.HeaderDLQSubject, stream.OutSubject(conv))
	m.Header.Set(worker.HeaderDLQEventID, ev.ID)
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI(t, "dlq", "list", "--nats-url", n.URL())
	if code != 0 || !strings.Contains(out, "DIRECTION") || !strings.Contains(out, "outbound") || !strings.Contains(out, "budget_exhausted") {
		t.Fatalf("dlq list: code %d\n%s%s", code, out, errs)
	}
	if code, out, errs = runCLI(t, "dlq", "list", "--json", "--nats-url", n.URL()); code != 0 || !strings.Contains(out, `"direction":"outbound"`) {
		t.Fatalf("dlq list --json: code %d\n%s%s", code, out, errs)
	}
	if code, out, errs = runCLI(t, "dlq", "replay", "--nats-url", n.URL(), "--id", ev.ID); code != 0 {
		t.Fatalf("dlq replay: code %d\n%s%s", code, out, errs)
	}
	outStream, _ := js.Stream(ctx, stream.OutStream)
	got, err := outStream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(stream.OutSubject(conv)))
	if err != nil {
		t.Fatalf("replayed event not on the outbound subject: %v", err)
	}
	if back, err := handoff.UnmarshalEvent(got.Data); err != nil || back.ID != ev.ID {
		t.Fatalf("replayed %v, %v", back, err)
	}
}
