//go:build race

package worker_test

// raceEnabled: the race detector slows the in-process NATS servers and the
// simulator five- to tenfold, so the failover tests check their time bound only without it.
const raceEnabled = true
