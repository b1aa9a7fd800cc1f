package ordered

import (
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/nats-io/nats.go"
)

// HeaderReplay is set on events re-published by `handoff dlq replay`: an
// earlier attempt may have had its effect in part, so the handler looks
// before it acts (Delivery.Uncertain).
const HeaderReplay = "Handoff-Replay"

// Position is where an event sits in its stream: the stream's creation
// time (sequences restart when a stream is recreated) and the sequence.
type Position struct {
	Epoch int64
	Seq   uint64
}

// Delivery is the event being handled, at the head of its conversation.
type Delivery struct {
	// Event is the decoded envelope and Payload its decoded data (one of
	// the root package's payload types).
	Event   handoff.Event
	Payload any
	// Key is the conversation ID the subject belongs to.
	Key     string
	Subject string
	Pos     Position
	// Delivered is JetStream's NumDelivered: above 1, an earlier delivery
	// may have been handled in part.
	Delivered uint64
	// Stored is when the stream stored the event (first publication): an
	// age budget counts from it, since NumDelivered also counts gate
	// deferrals and outage hand-backs.
	Stored time.Time
	// Attempt counts the attempts within this delivery, from 1.
	Attempt int
	Header  nats.Header

	it        *item
	mayAct    func(*item) bool
	uncertain bool
}

// Uncertain reports whether an earlier attempt may have had its effect
// (a redelivery, a replayed dead letter, or a failed attempt whose outcome
// is unknown): the handler must look before it acts again.
func (d *Delivery) Uncertain() bool { return d.uncertain }

// CheckLease returns ErrLeaseLost when the process has not proved it holds
// the message for half the ack wait (past that, JetStream may give it to
// another process), or when the connection it came on was lost since (a
// restarted server or a new leader may already have given it to another
// process). Call it before each side effect.
func (d *Delivery) CheckLease() error {
	if d.it != nil && d.mayAct != nil && !d.mayAct(d.it) {
		return ErrLeaseLost
	}
	return nil
}
