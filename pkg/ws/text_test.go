package ws_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/ws"
)

// TestErrorTextsAreValidUTF8: an error that quotes the client's input (a
// decode error, an invalid room name) is cut on a character boundary, so
// that the frame (and the close reason) a client gets is valid UTF-8. Cut
// mid-character, the error frame could not be encoded: the node panicked.
func TestErrorTextsAreValidUTF8(t *testing.T) {
	t.Parallel()
	url := newServer(t, nil)
	for _, tc := range []struct {
		name, first string
		events      bool
	}{
		{"before join", "", false},
		{"after join", `{"user":"utf","room":"utf8-after","join":{"events":true}}`, true},
		{"seed client", `{"user":"utf","room":"utf8-seed"}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dial(t, url, tc.first)
			if tc.events {
				c.nextKind("KIND_LIVE")
			}
			// protobuf varies its error texts by a byte or so from build
			// to build: three lengths put some cut mid-character.
			for n := 80; n < 83; n++ {
				c.send(`{"join":{"events":"x` + strings.Repeat("€", n) + `"}}`)
				m := c.nextKind("error")
				msg := m["error"].(map[string]any)["message"].(string)
				if !strings.Contains(msg, "not a valid chat.Message") {
					t.Fatalf("got %v", m)
				}
				// json.Unmarshal replaces invalid UTF-8 with U+FFFD: the
				// frame itself was valid only if none appears.
				if !utf8.ValidString(msg) || strings.ContainsRune(msg, utf8.RuneError) {
					t.Fatalf("error text is not valid UTF-8: %q", msg)
				}
			}
		})
	}
	t.Run("close reason", func(t *testing.T) {
		t.Parallel()
		// A token for alice, a first frame naming someone else: the
		// refusal quotes the name, and its close reason is cut to fit
		// 123 bytes. Two lengths: one cut lands mid-character.
		secret := []byte(strings.Repeat("s", 32))
		v, err := auth.NewVerifier(auth.Config{HMACSecret: secret})
		if err != nil {
			t.Fatal(err)
		}
		url := newServer(t, nil, func(c *ws.Config) { c.Verifier = v })
		tok, err := auth.Mint(secret, "alice", nil, time.Hour, "", "")
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{strings.Repeat("€", 60), "a" + strings.Repeat("€", 60), "ab" + strings.Repeat("€", 60)} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			wc, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { wc.CloseNow() })
			c := &client{t: t, c: wc}
			c.send(`{"user":"` + name + `"}`)
			c.nextKind("error")
			ce := c.closed()
			if ce.Code != websocket.StatusPolicyViolation || len(ce.Reason) > 123 || !utf8.ValidString(ce.Reason) || !strings.HasPrefix(ce.Reason, `user "`) {
				t.Fatalf("closed with %d %q (%d bytes)", ce.Code, ce.Reason, len(ce.Reason))
			}
		}
	})
}
