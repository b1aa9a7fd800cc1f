package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/handoff-dev/handoff/stream"
	"github.com/handoff-dev/handoff/worker"
)

func runDLQ(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			fmt.Fprintln(stdout, dlqUsage)
			return errHelp
		}
		return usageError{errors.New("dlq: want 'dlq list' or 'dlq replay' (see handoff dlq --help)\n" + dlqUsage)}
	}
	var (
		n       natsFlags
		lg      logging
		limit   int
		asJSON  bool
		id      string
		seq     int64
		all     bool
		sub     = args[0]
		summary = "List the dead letters: events the workers gave up on, with their reason and\ndirection (inbound: to LiveChat; outbound: to the user's surface)."
	)
	if sub == "replay" {
		summary = "Publish dead letters back to the subject they came from (inbound or outbound, at\nthe end of the conversation's queue) and remove them from the dead-letter stream.\nThe event keeps its ID, so anything an earlier attempt delivered (to LiveChat,\nGoogle Chat or a callback) is not sent twice."
	}
	f := newFlags("dlq "+sub, "[flags]", summary)
	n.register(f, false)
	lg.register(f)
	if sub == "list" {
		f.Int(&limit, "limit", "", 100, "show at most this many (0: all)")
		f.Bool(&asJSON, "json", "", false, "print JSON lines")
	} else {
		f.String(&id, "id", "", "", "replay the dead letter of this event ID")
		f.Int64(&seq, "seq", "", 0, "replay the dead letter at this sequence of HANDOFF_DLQ")
		f.Bool(&all, "all", "", false, "replay every dead letter")
	}
	if err := f.parse(args[1:], stdout); err != nil {
		return err
	}
	log, err := lg.logger()
	if err != nil {
		return err
	}
	nc, js, err := n.connect("handoff-dlq", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	if sub == "list" {
		dls, err := worker.ListDeadLetters(ctx, js, limit)
		if err != nil {
			return err
		}
		if asJSON {
			enc := json.NewEncoder(stdout)
			for _, d := range dls {
				if err := enc.Encode(struct {
					worker.DeadLetter
					Direction string `json:"direction"`
				}{d, direction(d)}); err != nil {
					return err
				}
			}
			return nil
		}
		if len(dls) == 0 {
			fmt.Fprintln(stdout, "no dead letters")
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tDIRECTION\tCONVERSATION\tEVENT\tTYPE\tREASON\tERROR")
		for _, d := range dls {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Sequence, d.Time.Format(time.RFC3339), direction(d), d.Conversation, d.EventID, d.Type, d.Reason, d.Error)
		}
		return tw.Flush()
	}

	var seqs []uint64
	switch {
	case all:
		dls, err := worker.ListDeadLetters(ctx, js, 0)
		if err != nil {
			return err
		}
		for _, d := range dls {
			seqs = append(seqs, d.Sequence)
		}
	case id != "":
		s, err := worker.FindDeadLetter(ctx, js, id)
		if err != nil {
			return err
		}
		seqs = []uint64{s}
	case seq > 0:
		seqs = []uint64{uint64(seq)}
	default:
		return usageError{errors.New("dlq replay: give --id, --seq or --all")}
	}
	for _, s := range seqs {
		d, err := worker.ReplayDeadLetter(ctx, js, s)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "replayed seq=%s event=%s conversation=%s\n", strconv.FormatUint(s, 10), d.EventID, d.Conversation)
	}
	if len(seqs) == 0 {
		fmt.Fprintln(stdout, "no dead letters")
	}
	return nil
}

const dlqUsage = `Usage: handoff dlq list [flags]     list dead letters
       handoff dlq replay [flags]   replay dead letters (--id ID | --seq N | --all)
Run 'handoff dlq list --help' or 'handoff dlq replay --help' for flags.`

// direction names where a dead letter was going, from its original subject:
// a replay puts it back there.
func direction(d worker.DeadLetter) string {
	switch {
	case strings.HasPrefix(d.OriginalSubject, stream.OutPrefix):
		return "outbound"
	case strings.HasPrefix(d.OriginalSubject, stream.InPrefix), d.OriginalSubject == "":
		return "inbound"
	}
	return "unknown"
}
