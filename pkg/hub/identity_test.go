package hub_test

import (
	"context"
	"testing"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
)

// Names are stored in NFC: "é" typed as e + U+0301 is the same user as "é".
func TestUserNamesAreNormalized(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	s, _ := e.join(t, hub.JoinOptions{User: "re\u0301mi"}, false)
	if s.User() != "r\u00e9mi" {
		t.Fatalf("session user %q, want NFC", s.User())
	}
	// A token for "rémi" and a first message in NFD are the same user.
	if _, err := e.hub.Join(context.Background(), newFake(false), hub.JoinOptions{User: "r\u00e9mi", ClaimedUser: "re\u0301mi"}); err != nil {
		t.Fatalf("claimed NFD name refused: %v", err)
	}
	out, err := e.hub.Publish(context.Background(), &api.Message{User: "re\u0301mi", Text: "x"})
	if err != nil || out.GetUser() != "r\u00e9mi" {
		t.Fatalf("REST publish stored user %q (err %v)", out.GetUser(), err)
	}
	for _, bad := range []string{"\u202eevil", "\u200b", "   ", "a\u2066b"} {
		if _, err := e.hub.Join(context.Background(), newFake(false), hub.JoinOptions{User: bad}); hub.AsError(err) == nil || hub.AsError(err).Kind != hub.KindInvalid {
			t.Errorf("join as %q: %v", bad, err)
		}
	}
}

// A token's room list bounds joins; an empty list (rooms: []) allows none.
func TestMayJoinBoundsRooms(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	none := func(string) bool { return false }
	if _, err := e.hub.Join(context.Background(), newFake(false), hub.JoinOptions{User: "a", MayJoin: none}); hub.AsError(err) == nil || hub.AsError(err).Kind != hub.KindForbidden {
		t.Fatalf("join with no rooms allowed: %v", err)
	}
	only := func(r string) bool { return r == "x" }
	if _, err := e.hub.Join(context.Background(), newFake(false), hub.JoinOptions{User: "a", Room: "x", MayJoin: only}); err != nil {
		t.Fatalf("join of an allowed room: %v", err)
	}
}
