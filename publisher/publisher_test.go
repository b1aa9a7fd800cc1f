package publisher_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go/jetstream"
)

func setup(t *testing.T) (*testenv.NATS, jetstream.JetStream) {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.Connect()
	if _, err := stream.Setup(context.Background(), js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	return n, js
}

func TestDuplicateWindowStoresOnce(t *testing.T) {
	_, js := setup(t)
	ctx := context.Background()
	p := publisher.New(js, publisher.WithSource("test-bot"))
	conv := "projects/acme/agent/sessions/s.1"

	r1, err := p.SendUserMessage(ctx, conv, handoff.UserMessage{Text: "hello"}, publisher.WithID("evt-1"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := p.SendUserMessage(ctx, conv, handoff.UserMessage{Text: "hello"}, publisher.WithID("evt-1"))
	if err != nil {
		t.Fatal(err)
	}
	if r1.Duplicate || !r2.Duplicate || r1.Sequence != r2.Sequence {
		t.Errorf("receipts %+v %+v: want the second to be a duplicate of the first", r1, r2)
	}
	r3, err := p.SendUserMessage(ctx, conv, handoff.UserMessage{Text: "hello"}, publisher.WithID("evt-2"))
	if err != nil {
		t.Fatal(err)
	}
	if r3.Duplicate || r3.Sequence == r1.Sequence {
		t.Errorf("a new ID was treated as a duplicate: %+v", r3)
	}
	s, _ := js.Stream(ctx, stream.InStream)
	info, _ := s.Info(ctx)
	if info.State.Msgs != 2 {
		t.Errorf("stream holds %d messages, want 2", info.State.Msgs)
	}
}

func TestTypedMethodsPublishOnTheConversationSubject(t *testing.T) {
	_, js := setup(t)
	ctx := context.Background()
	p := publisher.New(js, publisher.WithSource("test-bot"))
	conv := "spaces/AAA/threads/t 1"
	at := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	if _, err := p.RequestHandoff(ctx, conv, handoff.HandoffRequested{Reason: "billing"}, publisher.WithTime(at)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.SendUserMessage(ctx, conv, handoff.UserMessage{Text: "are you there?"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CancelHandoff(ctx, conv, handoff.HandoffCancelled{}); err != nil {
		t.Fatal(err)
	}
	s, _ := js.Stream(ctx, stream.InStream)
	want := []handoff.EventType{handoff.TypeHandoffRequested, handoff.TypeMessageUser, handoff.TypeHandoffCancelled}
	seq := uint64(1)
	for i, typ := range want {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(stream.InSubject(conv)))
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		seq = m.Sequence + 1
		ev, err := handoff.UnmarshalEvent(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != typ || ev.Subject != conv || ev.Source != "test-bot" || m.Header.Get("Nats-Msg-Id") != ev.ID {
			t.Errorf("event %d = %+v (msg id %q)", i, ev, m.Header.Get("Nats-Msg-Id"))
		}
		if i == 0 && !ev.Time.Equal(at) {
			t.Errorf("WithTime ignored: %v", ev.Time)
		}
	}
}

func TestPublishRejectsInvalidEventsBeforeNATS(t *testing.T) {
	_, js := setup(t)
	p := publisher.New(js)
	_, err := p.SendUserMessage(context.Background(), "c", handoff.UserMessage{})
	if !errors.Is(err, handoff.ErrInvalid) || errors.Is(err, publisher.ErrUnavailable) {
		t.Fatalf("empty message: %v, want ErrInvalid", err)
	}
}

func TestPublishWithNATSDownIsUnavailable(t *testing.T) {
	n, js := setup(t)
	n.Stop()
	p := publisher.New(js, publisher.WithTimeout(500*time.Millisecond))
	_, err := p.SendUserMessage(context.Background(), "c", handoff.UserMessage{Text: "x"})
	if !errors.Is(err, publisher.ErrUnavailable) {
		t.Fatalf("with NATS down: %v, want ErrUnavailable", err)
	}
}
