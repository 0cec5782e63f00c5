package ws_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"example.com/chat/pkg/hub"
)

// FuzzWebSocketEdge drives raw frames through the real WebSocket edge of a
// running hub (the handler, the session, its writer, the fan-out) and
// checks that whatever a client sends: the node survives (a panic anywhere
// fails the run), every frame it answers is valid JSON in valid UTF-8, the
// fuzzing connection is answered or closed, and two clients already in the
// room still send and receive.
//
// The input is the frames, separated by newlines; a frame starting with
// 0x02 is sent as a binary frame.
func FuzzWebSocketEdge(f *testing.F) {
	for _, s := range []string{
		`{"user":"fz","text":"hi"}`,
		`{"user":"fz","join":{"events":true}}` + "\n" + `{"text":"hello","clientId":"c"}` + "\n" + `{"kind":"KIND_TYPING"}`,
		`{"join":{"events":"x` + strings.Repeat("€", 81) + `"}}`,
		`{"user":"fz","join":{"events":true}}` + "\n" + `{"join":{"events":"x` + strings.Repeat("€", 80) + `"}}`,
		`{"user":"fz"}` + "\n" + `{"text":"\ud800"}` + "\n" + `{"text":""}` + "\n" + `{"kind":"KIND_ACK"}`,
		`{"user":"fz","room":"` + strings.Repeat("€", 21) + `"}`,
		`{"user":"a\u202eb"}`, `{"user":"` + strings.Repeat("u", 65) + `"}`,
		`{"user":"fz","join":{"afterSeq":"18446744073709551615","epoch":"x","history":-5}}`,
		`{"user":"fz","join":{"noHistory":true}}` + "\n" + `{"text":"` + strings.Repeat("\u0001", 200) + `"}`,
		"\x02\x00\x01binary", `not json`, `[]`, `{}`, `null`, `{"text":5}`, "",
		strings.Repeat("{\"a\":", 200), `{"user":"fz"}` + strings.Repeat("\n{}", 12),
	} {
		f.Add([]byte(s))
	}
	// One node for the whole run; the room's two regular clients join
	// first.
	url := newServer(f, func(c *hub.Config) { c.MaxTextBytes = 1024; c.JoinTimeout = 2 * time.Second })
	watcher := dial(f, url, `{"user":"watcher","join":{"events":true}}`).c
	peer := dial(f, url, `{"user":"peer","join":{"events":true}}`).c
	(&client{t: f, c: watcher}).nextKind("KIND_LIVE")
	(&client{t: f, c: peer}).nextKind("KIND_LIVE")
	round := 0
	f.Fuzz(func(t *testing.T, input []byte) {
		round++
		fuzzer := dial(t, url, "")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, frame := range bytes.Split(input, []byte("\n")) {
			typ := websocket.MessageText
			if len(frame) > 0 && frame[0] == 0x02 {
				typ, frame = websocket.MessageBinary, frame[1:]
			}
			if fuzzer.c.Write(ctx, typ, frame) != nil {
				break // closed by the server
			}
		}
		// A probe every state answers: an undecodable frame gets an error
		// quoting it, before or after a join; or the connection is closed.
		_ = fuzzer.c.Write(ctx, websocket.MessageText, []byte("zzprobe"))
		for {
			_, data, err := fuzzer.c.Read(ctx)
			if err != nil {
				if ctx.Err() != nil {
					t.Fatal("the fuzzing connection was neither answered nor closed")
				}
				break
			}
			checkFrame(t, data)
			if bytes.Contains(data, []byte("zzprobe")) {
				break
			}
		}
		fuzzer.c.CloseNow()

		// The room still works both ways.
		text := fmt.Sprintf("check-%d", round)
		p := &client{t: t, c: peer}
		p.send(`{"text":"` + text + `","clientId":"` + text + `"}`)
		for {
			m := p.next()
			if m["kind"] == "KIND_ACK" && m["clientId"] == text {
				break
			}
		}
		w := &client{t: t, c: watcher}
		for {
			m := w.next()
			if m["text"] == text && m["user"] == "peer" {
				break
			}
		}
	})
}

// checkFrame fails unless data is one JSON object in valid UTF-8.
func checkFrame(t *testing.T, data []byte) {
	t.Helper()
	var m map[string]any
	if !utf8.Valid(data) || json.Unmarshal(data, &m) != nil {
		t.Fatalf("invalid frame %q", data)
	}
}
