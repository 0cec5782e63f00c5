package ws

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
)

// BenchmarkStandardClient is what a client pays per message it receives,
// reading frame by frame with a standard library (coder/websocket's Read,
// as the apps users write do), in each framing: one JSON message per frame
// (the default), chat.v1.ndjson and chat.v1.proto. The frames are the
// bytes this package writes for a batch of 1024 typical chat messages
// (rawConn.writeFrames); the client reads them from memory, so ns/op, per
// message (b.N counts messages), is the reading goroutine's CPU alone: no
// server, no network. "decode" parses each message as a client would
// (encoding/json into a struct; protobuf into api.Message), "frames" only
// finds the messages, which is the framing's own cost.
func BenchmarkStandardClient(b *testing.B) {
	const batch = 1024
	frames := make([]*hub.Frame, batch)
	for i := range frames {
		frames[i] = hub.NewFrame(&api.Message{
			User: fmt.Sprintf("user-%d", i%50), Room: "room-42", Seq: uint64(1000 + i),
			Text: "a chat line of typical length, some sixty characters or so", Ts: 1764000000000 + int64(i),
			Epoch: "f66c467813aea3a0",
		})
	}
	for _, tc := range []struct {
		name, subprotocol string
		mode              mode
	}{
		{"one-per-frame", "", modeSingle},
		{"ndjson", SubprotocolNDJSON, modeNDJSON},
		{"proto", SubprotocolProto, modeProto},
	} {
		var wire captureConn
		if err := (&rawConn{Conn: &wire}).writeFrames(frames, tc.mode, time.Second); err != nil {
			b.Fatal(err)
		}
		for _, decode := range []bool{false, true} {
			name := tc.name + "/frames"
			if decode {
				name = tc.name + "/decode"
			}
			b.Run(name, func(b *testing.B) {
				c := dialMemory(b, wire.buf.Bytes(), tc.subprotocol)
				ctx := context.Background()
				var (
					jm     benchMessage
					pm     api.Message
					nFrame int
				)
				b.ReportAllocs()
				b.ResetTimer()
				for got := 0; got < b.N; {
					_, data, err := c.Read(ctx)
					if err != nil {
						b.Fatal(err)
					}
					nFrame++
					switch tc.mode {
					case modeSingle:
						if decode {
							err = json.Unmarshal(data, &jm)
						}
						got++
					case modeNDJSON:
						for line := range bytes.SplitSeq(data, []byte{'\n'}) {
							if decode {
								err = json.Unmarshal(line, &jm)
							}
							got++
						}
					case modeProto:
						for len(data) > 0 && err == nil {
							n, w := binary.Uvarint(data)
							if decode {
								err = proto.Unmarshal(data[w:w+int(n)], &pm)
							}
							data = data[w+int(n):]
							got++
						}
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/float64(nFrame), "msgs/frame")
			})
		}
	}
}

// benchMessage is the struct a Go client would decode a JSON message into.
type benchMessage struct {
	User  string `json:"user"`
	Text  string `json:"text"`
	Room  string `json:"room"`
	Epoch string `json:"epoch"`
	Kind  string `json:"kind"`
	Ts    int64  `json:"ts"`
	Seq   uint64 `json:"seq"`
}

// captureConn is a net.Conn that keeps what is written to it.
type captureConn struct {
	net.Conn // nil: only the methods below are used
	buf      bytes.Buffer
}

func (c *captureConn) Write(p []byte) (int, error)      { return c.buf.Write(p) }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// dialMemory returns a coder/websocket client connection whose server
// sends stream over and over, from memory; what the client writes is
// dropped.
func dialMemory(b *testing.B, stream []byte, subprotocol string) *websocket.Conn {
	b.Helper()
	body := &loopBody{stream: stream}
	rt := roundTrip(func(r *http.Request) (*http.Response, error) {
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		h := http.Header{
			"Upgrade":              {"websocket"},
			"Connection":           {"Upgrade"},
			"Sec-Websocket-Accept": {base64.StdEncoding.EncodeToString(sum[:])},
		}
		if subprotocol != "" {
			h.Set("Sec-WebSocket-Protocol", subprotocol)
		}
		return &http.Response{StatusCode: http.StatusSwitchingProtocols, Header: h, Body: body, Request: r}, nil
	})
	opts := &websocket.DialOptions{HTTPClient: &http.Client{Transport: rt}}
	if subprotocol != "" {
		opts.Subprotocols = []string{subprotocol}
	}
	c, _, err := websocket.Dial(context.Background(), "ws://memory/", opts)
	if err != nil {
		b.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	b.Cleanup(func() { c.CloseNow() })
	return c
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// loopBody is the server side of dialMemory: reads cycle through stream
// (whole frames, so the cycle is seamless) until Close.
type loopBody struct {
	stream []byte
	off    int
	closed atomic.Bool
}

func (l *loopBody) Read(p []byte) (int, error) {
	if l.closed.Load() {
		return 0, io.EOF
	}
	n := copy(p, l.stream[l.off:])
	l.off = (l.off + n) % len(l.stream)
	return n, nil
}

func (l *loopBody) Write(p []byte) (int, error) { return len(p), nil }
func (l *loopBody) Close() error                { l.closed.Store(true); return nil }
