package handoff_test

import (
	"fmt"
	"testing"

	"github.com/handoff-dev/handoff"
)

func TestSetAgentKeepsTheNewestNameWithinTheBound(t *testing.T) {
	var c handoff.Conversation
	if !c.SetAgent("a1", "Anna") || c.Agents["a1"] != "Anna" {
		t.Fatalf("first name not kept: %v", c.Agents)
	}
	if c.SetAgent("a1", "Anna") {
		t.Error("the same name again reported a change")
	}
	if c.SetAgent("", "x") || c.SetAgent("a2", "") {
		t.Error("an empty ID or name was recorded")
	}
	for i := range 3 * handoff.MaxAgents {
		c.SetAgent(fmt.Sprintf("agent-%d", i), fmt.Sprintf("Agent %d", i))
	}
	last := fmt.Sprintf("agent-%d", 3*handoff.MaxAgents-1)
	if len(c.Agents) > handoff.MaxAgents || c.Agents[last] == "" {
		t.Errorf("%d names kept (bound %d), newest %q = %q", len(c.Agents), handoff.MaxAgents, last, c.Agents[last])
	}
}
