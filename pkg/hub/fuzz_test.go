package hub_test

import (
	"context"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
)

// FuzzValidateUser: a name is accepted exactly when it is 1-64 characters of
// valid UTF-8 without control characters.
func FuzzValidateUser(f *testing.F) {
	for _, s := range []string{"alice", "", "a\x00", strings.Repeat("é", 64), strings.Repeat("x", 65), "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := hub.ValidateUser(s)
		ok := s != "" && utf8.ValidString(s) && utf8.RuneCountInString(s) <= hub.MaxUserRunes &&
			strings.IndexFunc(s, unicode.IsControl) < 0
		if (err == nil) != ok {
			t.Fatalf("ValidateUser(%q) = %v, want ok=%v", s, err, ok)
		}
	})
}

// FuzzNormalizeRoom: accepted names never contain a hash-tag brace or a
// separator, and are at most 64 bytes.
func FuzzNormalizeRoom(f *testing.F) {
	for _, s := range []string{"", "general", "a.b-c_d", "{x}", "a b", "-x", strings.Repeat("r", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := hub.NormalizeRoom(s)
		if err != nil {
			return
		}
		if r == "" || len(r) > hub.MaxRoomBytes || strings.ContainsAny(r, "{}: /\x00") {
			t.Fatalf("NormalizeRoom(%q) accepted %q", s, r)
		}
	})
}

// FuzzPublish: whatever a client sends, Publish returns a client error or
// succeeds; it never panics, and nothing invalid is stored.
func FuzzPublish(f *testing.F) {
	f.Add("hi", int32(0), "id")
	f.Add("/me is typing…", int32(0), "")
	f.Add("", int32(3), "")
	f.Add("x\xff", int32(99), strings.Repeat("c", 200))
	e := newHub(f, nil)
	s, _ := e.join(f, hub.JoinOptions{User: "fuzz", NoHistory: true}, false)
	f.Fuzz(func(t *testing.T, text string, kind int32, clientID string) {
		err := s.Publish(context.Background(), &api.Message{Text: text, Kind: api.Kind(kind), ClientId: clientID})
		if err != nil && hub.AsError(err) == nil {
			t.Fatalf("error %v is not a client error", err)
		}
		if err == nil && (!utf8.ValidString(text) || len(text) > 16<<10) {
			t.Fatalf("accepted invalid text %q", text)
		}
	})
}
