package main

import (
	"bufio"
	"strings"
	"testing"

	"example.com/chat/api"
)

// TestUnavailableRetrySaidOnce: while the node cannot store messages (its
// Redis is down), it answers each retry of a send with Unavailable; the
// client retries by itself with the same id, so the screen says so once
// per message, not once per retry (seven "not sent … retry" lines invited
// a resend by hand: a real duplicate).
func TestUnavailableRetrySaidOnce(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	scr := &plainScreen{w: &out, sc: bufio.NewScanner(strings.NewReader(""))}
	s := newSession(&options{user: "alice", room: "r"}, scr)
	s.notified["id-1"] = false // a send in flight
	for range 7 {
		s.incoming(&api.Message{Kind: api.Kind_KIND_ERROR, ClientId: "id-1",
			Error: &api.Error{Code: 14, Message: "message not sent: the message bus is unavailable; retry"}})
	}
	// Someone else's error (no send of ours) is still shown.
	s.incoming(&api.Message{Kind: api.Kind_KIND_ERROR, Error: &api.Error{Code: 3, Message: "something else"}})
	got := out.String()
	if n := strings.Count(got, "not stored yet"); n != 1 {
		t.Fatalf("the retry notice was printed %d times, want once:\n%s", n, got)
	}
	if !strings.Contains(got, "do not send it again") || !strings.Contains(got, "! something else") {
		t.Fatalf("output:\n%s", got)
	}
}
