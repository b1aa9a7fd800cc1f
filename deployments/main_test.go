package deployments

import (
	"os"
	"testing"

	"github.com/handoff-dev/handoff/internal/testenv"
)

// TestMain removes the handoff binary the tests built (testenv.RunTests).
func TestMain(m *testing.M) { os.Exit(testenv.RunTests(m)) }
