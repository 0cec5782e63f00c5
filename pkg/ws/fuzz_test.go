package ws_test

import (
	"testing"
	"unicode/utf8"

	"example.com/chat/pkg/ws"
)

// FuzzDecodeFrame: no input panics the decoder, and whatever it accepts is
// a message whose strings are valid UTF-8 (protojson guarantees it; the hub
// relies on it).
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"user":"web","text":"hi","ts":1700000000000}`,
		`{"user":"a","room":"r","join":{"events":true,"afterSeq":"5","epoch":"e"}}`,
		`{"kind":"KIND_TYPING"}`, `{"text":5}`, `not json`, `{}`, `[]`, `{"ts":"x"}`,
		`{"text":"\ud800"}`, `{"join":{"history":-1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ws.DecodeFrame(data)
		if err != nil {
			if m != nil {
				t.Fatal("message returned with an error")
			}
			return
		}
		for _, s := range []string{m.GetUser(), m.GetText(), m.GetRoom(), m.GetClientId()} {
			if !utf8.ValidString(s) {
				t.Fatalf("accepted invalid UTF-8 %q", s)
			}
		}
	})
}
