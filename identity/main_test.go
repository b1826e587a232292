package identity_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a test leaves a goroutine
// running, such as an HTTP connection or a database connection opener.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
