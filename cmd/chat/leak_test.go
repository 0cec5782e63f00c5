package main

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the tests, or, with CHAT_TEST_MAIN=1, the command itself:
// the terminal tests (tty_test.go) start this test binary as the chat
// client in a tmux pane.
func TestMain(m *testing.M) {
	if os.Getenv("CHAT_TEST_MAIN") == "1" {
		main()
		return
	}
	goleak.VerifyTestMain(m)
}
