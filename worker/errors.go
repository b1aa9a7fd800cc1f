package worker

import "github.com/handoff-dev/handoff/store"

// errAbort leaves a conversation record as it is inside UpdateConversation.
var errAbort = store.ErrAbort
