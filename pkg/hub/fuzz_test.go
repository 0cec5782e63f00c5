package hub_test

import (
	"context"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
)

// FuzzValidateUser: NormalizeUser accepts only names that are 1-64
// characters of valid UTF-8 in NFC, without control or bidi characters,
// with a visible character and nothing invisible at either end; its result
// is the NFC form of the input and a fixed point. ValidateUser accepts
// exactly the names NormalizeUser leaves unchanged.
func FuzzValidateUser(f *testing.F) {
	for _, s := range []string{
		"alice", "", "a\x00", strings.Repeat("é", 64), strings.Repeat("x", 65), "\xff",
		"Zoe\u0308", " alice", "alice\u202e", "\u200b", "\u00a0", "a\u200db", "\u3164", "\u0301",
		"\U0001F3F4\U000E0067\U000E007F", "\u0958",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := hub.NormalizeUser(s)
		if verr := hub.ValidateUser(s); (verr == nil) != (err == nil && got == s) {
			t.Fatalf("ValidateUser(%+q) = %v, but NormalizeUser = %+q, %v", s, verr, got, err)
		}
		if err != nil {
			if e := hub.AsError(err); e == nil || e.Kind != hub.KindInvalid {
				t.Fatalf("NormalizeUser(%+q): %v is not KindInvalid", s, err)
			}
			return
		}
		if !utf8.ValidString(s) || got != norm.NFC.String(s) {
			t.Fatalf("NormalizeUser(%+q) = %+q, not the NFC form of valid input", s, got)
		}
		if n := utf8.RuneCountInString(got); n < 1 || n > hub.MaxUserRunes {
			t.Fatalf("NormalizeUser(%+q) = %+q: %d characters", s, got, n)
		}
		if i := strings.IndexFunc(got, func(r rune) bool {
			return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || unicode.In(r, unicode.Zl, unicode.Zp)
		}); i >= 0 {
			t.Fatalf("NormalizeUser(%+q) = %+q keeps a control character at %d", s, got, i)
		}
		if strings.TrimFunc(got, unicode.IsSpace) != got {
			t.Fatalf("NormalizeUser(%+q) = %+q has whitespace at an end", s, got)
		}
		if strings.IndexFunc(got, func(r rune) bool { return unicode.In(r, unicode.L, unicode.N, unicode.P, unicode.S) }) < 0 {
			t.Fatalf("NormalizeUser(%+q) = %+q has no visible character", s, got)
		}
		if again, err := hub.NormalizeUser(got); err != nil || again != got {
			t.Fatalf("NormalizeUser(%+q) = %+q, %v: not a fixed point", got, again, err)
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
