package worker

import "github.com/handoff-dev/handoff/internal/ordered"

// SetTestHook runs hook before each attempt to apply an event, until the
// returned function is called; hook may panic.
func SetTestHook(hook func(*ordered.Delivery)) (reset func()) {
	testHookHandle = hook
	return func() { testHookHandle = nil }
}
