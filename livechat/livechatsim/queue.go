package livechatsim

import "sync"

// waitQueue is the license's queue: the active threads no agent has
// taken, in the order they were queued. LiveChat reports a queued
// thread's place in it as thread.queue.position (get_chat, list_chats,
// incoming_chat), so a chat's position falls as the chats ahead of it are
// picked up or end. The sim keeps one queue for the license (LiveChat
// queues per group; the sim's chats share one group in practice).
type waitQueue struct {
	mu      sync.Mutex
	next    uint64
	waiting map[*thread]uint64 // thread -> its turn; lower is earlier
}

// update records whether t waits now: active and without an agent. Call
// with t's chat locked, after changing either.
func (q *waitQueue) update(t *thread) {
	waits := t.active && len(t.agents) == 0
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.waiting == nil {
		q.waiting = map[*thread]uint64{}
	}
	_, in := q.waiting[t]
	switch {
	case waits && !in:
		q.next++
		q.waiting[t] = q.next
	case !waits && in:
		delete(q.waiting, t)
	}
}

// requeue puts t at the back of the queue (a transfer to a group). Call
// with t's chat locked.
func (q *waitQueue) requeue(t *thread) {
	q.mu.Lock()
	delete(q.waiting, t)
	q.mu.Unlock()
	q.update(t)
}

// position is t's place in the queue, from 1; 0 when it does not wait.
func (q *waitQueue) position(t *thread) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	turn, ok := q.waiting[t]
	if !ok {
		return 0
	}
	n := 1
	for _, other := range q.waiting {
		if other < turn {
			n++
		}
	}
	return n
}

func (q *waitQueue) reset() {
	q.mu.Lock()
	q.waiting = map[*thread]uint64{}
	q.mu.Unlock()
}
