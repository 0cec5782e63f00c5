package ws_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
	"example.com/chat/pkg/ws"
)

// FuzzWebSocketPacked is FuzzWebSocketEdge for the packed modes: raw
// frames through the real edge of a running hub, on a connection that
// negotiated chat.v1.ndjson or chat.v1.proto. Whatever the client sends,
// the node survives, every frame it answers parses in the mode's packing
// (lines of JSON objects in valid UTF-8, or length-prefixed protobuf with
// valid strings), the fuzzing connection is answered or closed, and two
// clients already in the room (one per packed mode) still send and
// receive.
//
// The input's first byte picks the mode (even: ndjson, odd: proto); the
// rest is the frames, separated by 0x1e (newlines belong to ndjson); a
// frame starting with 0x02 is sent as a binary frame.
func FuzzWebSocketPacked(f *testing.F) {
	pb := func(ms ...*api.Message) string {
		var b []byte
		for _, m := range ms {
			e, err := proto.Marshal(m)
			if err != nil {
				f.Fatal(err)
			}
			b = append(binary.AppendUvarint(b, uint64(len(e))), e...)
		}
		return "\x02" + string(b)
	}
	join := &api.Message{User: "fz", Join: &api.Join{Events: true}}
	for _, s := range []string{
		"\x00" + `{"user":"fz","join":{"events":true}}` + "\n" + `{"text":"hello","clientId":"c"}` + "\n" + `{"kind":"KIND_TYPING"}`,
		"\x00" + `{"user":"fz"}` + "\x1e" + `{"text":"a"}` + "\n\n" + `not json` + "\n" + `{"text":"\ud800"}` + "\r\n",
		"\x00" + `{"user":"fz","join":{"events":true}}` + "\x1e" + "\n" + "\x1e" + "" + "\x1e" + `{"text":5}` + strings.Repeat("\n{}", 12),
		"\x00" + `{"user":"fz"}` + "\n" + pb(&api.Message{Text: "binary in ndjson mode"}),
		"\x01" + pb(join, &api.Message{Text: "one", ClientId: "1"}, &api.Message{Kind: api.Kind_KIND_TYPING}),
		"\x01" + pb(join) + "\x1e" + "\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
		"\x01" + pb(join) + "\x1e" + "\x02\x7f\x01\x02" + "\x1e" + "\x02" + "\x1e" + "\x02\x04\x12\x02\xff\xfe",
		"\x01" + pb(&api.Message{User: "fz", Room: strings.Repeat("€", 21)}),
		"\x01" + `{"user":"fz","join":{"events":true}}` + "\n" + `{"text":"json in proto mode"}`,
		"\x01" + pb(join, &api.Message{Kind: api.Kind_KIND_PAGE, ClientId: "p", History: &api.HistoryRequest{Limit: -1}}),
		"\x01" + "\x02" + strings.Repeat("\x01\x00", 50),
		"\x00", "\x01",
	} {
		f.Add([]byte(s))
	}
	url := newServer(f, func(c *hub.Config) { c.MaxTextBytes = 1024; c.JoinTimeout = 2 * time.Second })
	watcher := dialPacked(f, url, ws.SubprotocolNDJSON)
	watcher.write(`{"user":"watcher","join":{"events":true}}`)
	watcher.nextKind("KIND_LIVE")
	peer := dialPacked(f, url, ws.SubprotocolProto)
	peer.write(`{"user":"peer","join":{"events":true}}`)
	peer.nextKind("KIND_LIVE")
	round := 0
	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) == 0 {
			return
		}
		round++
		mode := packedModes[input[0]%2]
		fuzzer := dialPacked(t, url, mode)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, frame := range bytes.Split(input[1:], []byte{0x1e}) {
			typ := websocket.MessageText
			if len(frame) > 0 && frame[0] == 0x02 {
				typ, frame = websocket.MessageBinary, frame[1:]
			}
			if fuzzer.c.Write(ctx, typ, frame) != nil {
				break // closed by the server
			}
		}
		// A probe every state answers (an undecodable line gets an error
		// quoting it, in either packed mode), or the connection is closed.
		_ = fuzzer.c.Write(ctx, websocket.MessageText, []byte("zzprobe"))
	read:
		for {
			typ, data, err := fuzzer.c.Read(ctx)
			if err != nil {
				if ctx.Err() != nil {
					t.Fatal("the fuzzing connection was neither answered nor closed")
				}
				break
			}
			msgs, err := splitPacked(mode == ws.SubprotocolProto, typ, data)
			if err != nil {
				t.Fatalf("invalid frame: %v", err)
			}
			for _, m := range msgs {
				if e, ok := m["error"].(map[string]any); ok && strings.Contains(fmt.Sprint(e["message"]), "zzprobe") {
					break read
				}
			}
		}
		fuzzer.c.CloseNow()

		// The room still works both ways, in both modes.
		text := fmt.Sprintf("check-%d", round)
		peer.t, watcher.t = t, t
		peer.write(`{"text":"` + text + `","clientId":"` + text + `"}`)
		for {
			m := peer.next()
			if m["kind"] == "KIND_ACK" && m["clientId"] == text {
				break
			}
		}
		for {
			m := watcher.next()
			if m["text"] == text && m["user"] == "peer" {
				break
			}
		}
	})
}
