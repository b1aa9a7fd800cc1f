//go:build race

package worker_test

// raceEnabled: the race detector slows the servers and the simulator
// several-fold, so TestHotConversationDoesNotStallOthers runs a shorter
// backlog and does not check its time bound under it.
const raceEnabled = true
