package main

import (
	"bufio"
	"regexp"
	"strings"
	"testing"

	"example.com/chat/api"
	"example.com/chat/pkg/access"
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

// TestInvitationsAndLabels: an invitation on the personal channel is one
// line that says what to type; a direct conversation is shown by its
// peer's name, inert, never by its id; lines of rooms other than the
// current one carry their label, events of other rooms and messages of
// rooms not joined (still on their way after a /leave) are left out.
func TestInvitationsAndLabels(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	scr := &plainScreen{w: &out, sc: bufio.NewScanner(strings.NewReader(""))}
	s := newSession(&options{user: "alice", room: "general"}, scr)
	dm := access.DirectRoom("alice", "eve\x1b[2J")
	s.incoming(&api.Message{Kind: api.Kind_KIND_INVITE, Room: dm, User: "eve\x1b[2J"})
	s.incoming(&api.Message{Kind: api.Kind_KIND_INVITE, Room: "team", User: "bob"})
	s.joined = []string{dm, "general"} // as after /dm, then /join general
	s.incoming(&api.Message{Kind: api.Kind_KIND_MESSAGE, Room: dm, User: "eve\x1b[2J", Text: "psst"})
	s.incoming(&api.Message{Kind: api.Kind_KIND_MESSAGE, Room: "left", User: "bob", Text: "from a room left"})
	s.incoming(&api.Message{Kind: api.Kind_KIND_MESSAGE, Room: "general", User: "bob", Text: "here"})
	s.incoming(&api.Message{Kind: api.Kind_KIND_TYPING, Room: "dev", User: "carol"})
	s.incoming(&api.Message{Kind: api.Kind_KIND_JOIN, Room: "general", User: "carol"})
	got := out.String()
	checkInert(t, got)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\* eve\\x1b\[2J started a direct conversation — /dm eve\\x1b\[2J$`),
		regexp.MustCompile(`(?m)^\* bob invited you to #team — /join team$`),
		regexp.MustCompile(`(?m)^\[@eve\\x1b\[2J\] \d\d:\d\d:\d\d eve\\x1b\[2J: psst$`),
		regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d bob: here$`),
		regexp.MustCompile(`(?m)^\* carol joined$`),
	} {
		if !want.MatchString(got) {
			t.Errorf("no line matches %s", want)
		}
	}
	if strings.Contains(got, "dm.") || strings.Contains(got, "typing") || strings.Contains(got, "a room left") {
		t.Errorf("the id of a direct conversation, another room's typing, or a room not joined is shown:\n%s", got)
	}
	if t.Failed() {
		t.Logf("output:\n%s", got)
	}
}
