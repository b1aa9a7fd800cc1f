// Package funnel holds the handoff funnel metrics (handoff_funnel_*): how
// many handoffs reach each stage, from the request to the chat's end, how
// long after the request, and how many are abandoned and why.
//
// The inbound worker counts the stages it decides (requested, chat started,
// the end by a cancel, a pickup timeout), the outbound consumer those
// LiveChat reports (queued, agent joined, first agent reply, closed, no
// agents). Each counts a stage only after the compare-and-swap of the
// conversation record that marked it reached (handoff.Funnel) succeeded, so
// a stage is counted once per handoff whatever the number of processes,
// redeliveries and copies of an event; a process dying between the write
// and the count loses that one count, it never doubles one.
package funnel

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/prometheus/client_golang/prometheus"
)

// MaxGroupLabel bounds the group label: LiveChat numbers a license's
// groups from 0 up, so real groups stay far below it, while a client
// naming arbitrary groups cannot grow the number of series beyond it.
// Groups at or above it are counted as "other".
const MaxGroupLabel = 100

// DefaultGroup is the group label of a handoff that named no group (it
// goes to the worker's --group).
const DefaultGroup = "default"

// GroupLabel is the bounded group label of a handoff's group.
func GroupLabel(g *int) string {
	switch {
	case g == nil:
		return DefaultGroup
	case *g < 0 || *g >= MaxGroupLabel:
		return "other"
	}
	return strconv.Itoa(*g)
}

// ChannelLabel is the channel label: the bot surface the user is on, or
// "unknown" when the handoff named none (or one handoff does not know).
func ChannelLabel(c handoff.Channel) string {
	switch c {
	case handoff.ChannelREST, handoff.ChannelDialogflowES, handoff.ChannelDialogflowCX, handoff.ChannelGoogleChat:
		return string(c)
	}
	return "unknown"
}

// Metrics are the funnel's counters and histogram. One process shares one
// set between its worker and outbound consumer: New returns the set
// already registered on reg, if any.
type Metrics struct {
	stages    *prometheus.CounterVec
	durations *prometheus.HistogramVec
	abandoned *prometheus.CounterVec
}

// New registers the funnel metrics on reg, or returns those registered on
// it before.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		stages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "handoff_funnel_stage_total",
			Help: "Handoffs that reached each funnel stage (requested, chat_started, queued, agent_joined, first_agent_reply, closed), once per handoff, by the user's channel and the LiveChat group.",
		}, []string{"stage", "channel", "group"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "handoff_funnel_stage_duration_seconds",
			Help: "Time from the handoff request to reaching each later funnel stage, by channel and group.",
			// Seconds to an hour: people wait minutes for an agent, and
			// the first-reply alert reads the p90 around 5 minutes.
			Buckets: []float64{1, 5, 10, 30, 60, 120, 180, 300, 600, 900, 1800, 3600},
		}, []string{"stage", "channel", "group"}),
		abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "handoff_funnel_abandoned_total",
			Help: "Handoffs that ended before an agent's reply, by reason (user_cancelled, pickup_timeout, no_agents, closed_without_reply), channel and group.",
		}, []string{"reason", "channel", "group"}),
	}
	var err error
	if m.stages, err = register(reg, m.stages); err != nil {
		return nil, err
	}
	if m.durations, err = register(reg, m.durations); err != nil {
		return nil, err
	}
	if m.abandoned, err = register(reg, m.abandoned); err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	if err != nil {
		return c, fmt.Errorf("funnel metrics: %w", err)
	}
	return c, nil
}

// Reached counts a handoff reaching stage s, sinceRequest after the
// request (not observed for the request itself). Call it only after the
// record that marks s reached was written.
func (m *Metrics) Reached(f *handoff.Funnel, s handoff.FunnelStage, sinceRequest time.Duration) {
	if m == nil || f == nil {
		return
	}
	m.stages.WithLabelValues(string(s), f.Channel, f.Group).Inc()
	if s != handoff.StageRequested {
		m.durations.WithLabelValues(string(s), f.Channel, f.Group).Observe(sinceRequest.Seconds())
	}
}

// Abandoned counts a handoff abandoned for reason. Call it only after the
// record that marks it abandoned was written.
func (m *Metrics) Abandoned(f *handoff.Funnel, reason string) {
	if m == nil || f == nil {
		return
	}
	m.abandoned.WithLabelValues(reason, f.Channel, f.Group).Inc()
}

// Ended counts what handoff.Funnel.End decided.
func (m *Metrics) Ended(f *handoff.Funnel, stage handoff.FunnelStage, sinceRequest time.Duration, abandoned string) {
	switch {
	case stage != "":
		m.Reached(f, stage, sinceRequest)
	case abandoned != "":
		m.Abandoned(f, abandoned)
	}
}
