//go:build !race

package worker_test

// raceEnabled: see race_on_test.go.
const raceEnabled = false
