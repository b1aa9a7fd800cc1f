package gateway

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/store"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// Dialogflow has no way to push a message into a session: a Dialogflow
// user reads an agent's reply on a push surface (the signed callback the
// bot owner's front end receives, the event stream a web page holds open)
// or, with the Dialogflow pull, in the answer to their next turn. The pull
// carries what is waiting on the conversation's feed (HANDOFF_FEED, the
// same log the event stream reads) that no push surface has shown: each
// feed message is claimed once (store Remember on the conversation and
// the feed sequence), by the first of a Dialogflow answer, an event stream
// or a pull request that shows it, so no message is carried twice and none
// a stream already showed. A per-conversation cursor (store value) only
// saves reading the feed from the start.

// Dialogflow pull modes (Config.DialogflowPull).
const (
	// DialogflowPullAuto pulls when no callback is configured
	// (Config.CallbackConfigured false): then nothing else pushes to a
	// Dialogflow user that has no event stream open.
	DialogflowPullAuto = "auto"
	DialogflowPullOn   = "on"
	DialogflowPullOff  = "off"
)

const (
	// maxPullLines and maxPullBytes bound what one answer carries (an ES
	// answer may be 64 KiB); the rest waits for the next turn.
	maxPullLines = 20
	maxPullBytes = 16 << 10
	// maxPullScan bounds the feed messages one answer reads.
	maxPullScan = 200
	// pullClaimTTL outlives the feed's default retention (24 h), so a
	// claim is never forgotten while its message can still be read.
	pullClaimTTL = 25 * time.Hour
)

// pullEnabled reports whether Dialogflow answers carry waiting messages.
func (g *Gateway) pullEnabled() bool {
	if g.feed == nil {
		return false
	}
	switch g.cfg.DialogflowPull {
	case DialogflowPullOn:
		return true
	case DialogflowPullAuto, "":
		return !g.cfg.CallbackConfigured
	}
	return false
}

func pullCursorKey(conv string) string { return "gateway:df-pull:" + conv }

func pullClaimKey(conv string, seq uint64) string {
	return "gateway:df-pulled:" + strconv.FormatUint(seq, 10) + ":" + conv
}

func pullTurnKey(eventID string) string { return "gateway:df-pull-turn:" + eventID }

// feedStream returns the feed stream's handle, looked up once and again
// after an error.
func (g *Gateway) feedStream(ctx context.Context) (jetstream.Stream, error) {
	g.feedMu.Lock()
	defer g.feedMu.Unlock()
	if g.feedSt != nil {
		return g.feedSt, nil
	}
	s, err := g.feed.Stream(ctx, stream.FeedStream)
	if err != nil {
		return nil, fmt.Errorf("feed stream: %w", err)
	}
	g.feedSt = s
	return s, nil
}

func (g *Gateway) dropFeedStream() {
	g.feedMu.Lock()
	g.feedSt = nil
	g.feedMu.Unlock()
}

// pulled returns the lines a Dialogflow answer carries for this turn:
// the agent's messages (and status lines) waiting on the feed that no
// surface has shown. A turn the bot answers carries nothing (its answer
// is the bot's own). A failure to read only delays the lines to a later
// turn: the user's turn was handled and must be answered.
func (g *Gateway) pulled(ctx context.Context, t turn, out outcome) []string {
	if out.kind == outcomeBot || !g.pullEnabled() {
		return nil
	}
	lines, err := g.pull(ctx, t)
	if err != nil {
		g.log.Warn("dialogflow pull failed; the messages wait for the next turn", "err", err)
		return nil
	}
	return lines
}

func (g *Gateway) pull(ctx context.Context, t turn) (lines []string, err error) {
	var seqs []string
	defer func() {
		if err != nil {
			// Unclaim what this answer will not carry, so the next
			// turn does.
			for _, sq := range seqs {
				n, _ := strconv.ParseUint(sq, 10, 64)
				_ = g.st.Forget(context.WithoutCancel(ctx), pullClaimKey(t.conversation, n))
			}
		}
	}()
	s, err := g.feedStream(ctx)
	if err != nil {
		return nil, err
	}
	memo := ""
	if t.turnID != "" {
		// A retried turn carries what the first call carried: its answer
		// may be the one that got lost.
		memo = pullTurnKey(t.eventID())
		v, err := g.st.Value(ctx, memo)
		switch {
		case err == nil:
			return g.pullAgain(ctx, s, t, v)
		case !errors.Is(err, store.ErrNotFound):
			return nil, fmt.Errorf("read pull memo: %w", err)
		}
	}
	after := uint64(0)
	cursorKey := pullCursorKey(t.conversation)
	if v, err := g.st.Value(ctx, cursorKey); err == nil {
		after, _ = strconv.ParseUint(v, 10, 64)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("read pull cursor: %w", err)
	}
	subject := stream.FeedSubject(t.conversation)
	size, cursor := 0, after
	for scanned := 0; scanned < maxPullScan && len(lines) < maxPullLines; scanned++ {
		m, err := s.GetMsg(ctx, cursor+1, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			g.dropFeedStream()
			return nil, fmt.Errorf("read feed: %w", err)
		}
		line := g.pullLine(m.Data, t.lang)
		if line != "" {
			if len(lines) > 0 && size+len(line) > maxPullBytes {
				break // the next turn carries it
			}
			first, err := g.st.Remember(ctx, pullClaimKey(t.conversation, m.Sequence), pullClaimTTL)
			if err != nil {
				return nil, fmt.Errorf("claim feed message: %w", err)
			}
			if first {
				line = clip(line, maxPullBytes)
				lines = append(lines, line)
				seqs = append(seqs, strconv.FormatUint(m.Sequence, 10))
				size += len(line)
			}
		}
		cursor = m.Sequence
	}
	if len(seqs) > 0 && memo != "" {
		if err := g.st.SetValue(ctx, memo, strings.Join(seqs, ","), turnTTL); err != nil {
			return nil, fmt.Errorf("remember pulled messages: %w", err)
		}
	}
	if cursor > after {
		if err := g.st.SetValue(ctx, cursorKey, strconv.FormatUint(cursor, 10), pullClaimTTL); err != nil {
			g.log.Warn("dialogflow pull: cursor not saved; the next turn reads further back", "err", err)
		}
	}
	return lines, nil
}

// pullAgain reads the feed messages a first call of this turn carried.
func (g *Gateway) pullAgain(ctx context.Context, s jetstream.Stream, t turn, memo string) ([]string, error) {
	var lines []string
	for _, sq := range strings.Split(memo, ",") {
		n, err := strconv.ParseUint(sq, 10, 64)
		if err != nil {
			continue
		}
		m, err := s.GetMsg(ctx, n)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // aged out of the feed
		}
		if err != nil {
			g.dropFeedStream()
			return nil, fmt.Errorf("read feed: %w", err)
		}
		if line := g.pullLine(m.Data, t.lang); line != "" {
			lines = append(lines, clip(line, maxPullBytes))
		}
	}
	return lines, nil
}

// pullLine is the text a Dialogflow user reads for a feed message, or ""
// for what the answer does not carry: the chat's close, which the first
// turn after it says itself (with the agent context cleared).
func (g *Gateway) pullLine(data []byte, lang string) string {
	ev, err := handoff.UnmarshalEvent(data)
	if err != nil || ev.Type == handoff.TypeChatClosed {
		return ""
	}
	return g.cfg.Texts.Line(ev, lang)
}

// markSeen claims a feed message an event stream or pull request showed,
// so no Dialogflow answer carries it again. Only for Dialogflow
// conversations while the pull is on; a failure only risks a repeat.
func (g *Gateway) markSeen(ctx context.Context, conversation string, seq uint64) {
	if !g.pullEnabled() {
		return
	}
	if ch := channelOf(conversation); ch != handoff.ChannelDialogflowES && ch != handoff.ChannelDialogflowCX {
		return
	}
	if _, err := g.st.Remember(ctx, pullClaimKey(conversation, seq), pullClaimTTL); err != nil {
		g.log.Warn("dialogflow pull: could not mark a streamed message seen", "err", err)
	}
}

// pullState is the Gateway's part for the pull (kept apart for clarity).
type pullState struct {
	feedMu sync.Mutex
	feedSt jetstream.Stream
}
