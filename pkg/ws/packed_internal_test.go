package ws

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
)

// serverFrame is one frame as a client parses it (RFC 6455 §5.2).
type serverFrame struct {
	op      byte
	payload []byte
}

// parseFrames splits what a server wrote into frames; the parser is the
// test's own, not the writer's.
func parseFrames(t *testing.T, b []byte) []serverFrame {
	t.Helper()
	var out []serverFrame
	for len(b) > 0 {
		if len(b) < 2 || b[0]&0x80 == 0 || b[1]&0x80 != 0 {
			t.Fatalf("bad frame header % x", b[:min(len(b), 10)])
		}
		n, h := uint64(b[1]&0x7F), 2
		switch n {
		case 126:
			n, h = uint64(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			n, h = binary.BigEndian.Uint64(b[2:]), 10
		}
		if uint64(len(b)-h) < n {
			t.Fatalf("frame of %d bytes, %d left", n, len(b)-h)
		}
		out = append(out, serverFrame{op: b[0] & 0x0F, payload: b[h : h+int(n)]})
		b = b[h+int(n):]
	}
	return out
}

// TestWriteFramesPacked: a batch of 600 messages of mixed sizes (two of
// them bigger than MaxPackedBytes alone) is written as frames that a
// client splits back into the same messages, in order; every frame of
// more than one message is within MaxPackedBytes, the big ones are alone,
// and frames are as full as the bound allows (the next message would not
// have fit). The default mode is one frame per message, as before.
func TestWriteFramesPacked(t *testing.T) {
	t.Parallel()
	var msgs []*hub.Frame
	var texts []string
	for i := range 600 {
		text := fmt.Sprintf("%d:%s", i, strings.Repeat("é\n\"", i*7%900))
		if i == 100 || i == 101 {
			text = strings.Repeat("big", 7000) // 21 KB alone
		}
		texts = append(texts, text)
		msgs = append(msgs, hub.NewFrame(&api.Message{User: "u", Text: text, Seq: uint64(i + 1), Ts: 1764000000000}))
	}
	for name, m := range map[string]mode{"single": modeSingle, "ndjson": modeNDJSON, "proto": modeProto} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var wire captureConn
			rc := &rawConn{Conn: &wire}
			if err := rc.writeFrames(msgs, m, time.Second); err != nil {
				t.Fatal(err)
			}
			if cap(rc.scratch) > maxIdleScratch {
				t.Fatalf("kept %d bytes of scratch", cap(rc.scratch))
			}
			var got []string
			var sizes []int // messages per frame
			frames := parseFrames(t, wire.buf.Bytes())
			for _, f := range frames {
				var parts [][]byte
				switch m {
				case modeSingle, modeNDJSON:
					if f.op != opText || !utf8.Valid(f.payload) {
						t.Fatalf("frame op %d, valid UTF-8 %v", f.op, utf8.Valid(f.payload))
					}
					parts = [][]byte{f.payload}
					if m == modeNDJSON {
						parts = bytes.Split(f.payload, []byte{'\n'})
					}
				case modeProto:
					if f.op != opBinary {
						t.Fatalf("frame op %d", f.op)
					}
					for p := f.payload; len(p) > 0; {
						n, w := binary.Uvarint(p)
						if w <= 0 || n > uint64(len(p)-w) {
							t.Fatalf("bad prefix")
						}
						parts, p = append(parts, p[w:w+int(n)]), p[w+int(n):]
					}
				}
				for _, p := range parts {
					msg := new(api.Message)
					var err error
					if m == modeProto {
						err = proto.Unmarshal(p, msg)
					} else {
						err = protojson.Unmarshal(p, msg)
					}
					if err != nil {
						t.Fatalf("message %d: %v", len(got), err)
					}
					if msg.GetSeq() != uint64(len(got)+1) {
						t.Fatalf("message %d has seq %d", len(got), msg.GetSeq())
					}
					got = append(got, msg.GetText())
				}
				if len(parts) > 1 && len(f.payload) > MaxPackedBytes {
					t.Fatalf("a frame of %d messages has %d bytes", len(parts), len(f.payload))
				}
				sizes = append(sizes, len(parts))
			}
			if strings.Join(got, "\x00") != strings.Join(texts, "\x00") {
				t.Fatalf("%d messages came back, not the %d sent", len(got), len(texts))
			}
			if m == modeSingle {
				if len(frames) != len(msgs) {
					t.Fatalf("%d frames for %d messages", len(frames), len(msgs))
				}
				return
			}
			// Full frames: each frame and the next message would exceed the
			// bound (the sizes are the writer's own; a frame's bytes, plus
			// the next message's framing).
			i := 0
			for k, n := range sizes {
				i += n
				if k == len(sizes)-1 {
					break
				}
				next := len(payloadOf(m, msgs[i])) + 1
				if m == modeProto {
					next = len(payloadOf(m, msgs[i])) + varintLen(len(payloadOf(m, msgs[i])))
				}
				if len(frames[k].payload)+next <= MaxPackedBytes {
					t.Fatalf("frame %d (%d bytes) had room for the next message (%d)", k, len(frames[k].payload), next)
				}
			}
			for _, big := range []int{100, 101} {
				acc := 0
				for _, n := range sizes {
					if acc += n; big < acc {
						if n != 1 {
							t.Fatalf("message %d, over the bound, shares a frame of %d", big, n)
						}
						break
					}
				}
			}
			t.Logf("%d messages in %d frames", len(got), len(frames))
		})
	}
}

func payloadOf(m mode, f *hub.Frame) []byte {
	if m == modeProto {
		return f.Proto()
	}
	return jsonPayload(f)
}

// FuzzPackedReader: whatever a client's packed frame holds, splitting it
// ends, never panics, and whatever it accepts has valid UTF-8 strings.
func FuzzPackedReader(f *testing.F) {
	for _, s := range []string{
		"{\"text\":\"a\"}\n\n{\"text\":5}\r\n", "\n", " ", "",
		"\x02\x12\x00\x00\x05\x12\x03abc", "\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "\x02\x7f",
		"\x02\x04\x12\x02\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		typ := websocket.MessageText
		if len(data) > 0 && data[0] == 0x02 {
			typ, data = websocket.MessageBinary, data[1:]
		}
		var p packedReader
		if p.start(typ, data) != nil {
			if p.more() {
				t.Fatal("an empty frame left something to read")
			}
			return
		}
		for steps := 0; p.more(); steps++ {
			if steps > len(data) {
				t.Fatal("splitting does not end")
			}
			m, err := p.next()
			if err != nil || m == nil {
				continue
			}
			for _, s := range []string{m.GetUser(), m.GetText(), m.GetRoom(), m.GetClientId(), m.GetEpoch()} {
				if !utf8.ValidString(s) {
					t.Fatalf("accepted invalid UTF-8 %q", s)
				}
			}
		}
	})
}
