package ws_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/hub"
	"example.com/chat/pkg/ws"
)

// packedClient reads and writes a packed connection with its own parser
// of the wire (not the server's), and records what each frame held.
type packedClient struct {
	t       testing.TB
	c       *websocket.Conn
	proto   bool             // SubprotocolProto: binary frames
	pending []map[string]any // messages of the last frame not yet returned
	frames  []frameStat      // every data frame read
}

type frameStat struct {
	msgs, bytes int
}

// dialProtos dials url offering protos (and header), and returns the
// connection and the subprotocol the server selected.
func dialProtos(t testing.TB, url string, protos []string, header http.Header) (*websocket.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: protos, HTTPHeader: header})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	c.SetReadLimit(1 << 20)
	return c, c.Subprotocol()
}

// dialPacked dials in the packed mode proto and checks the server chose it.
func dialPacked(t testing.TB, url, subprotocol string) *packedClient {
	t.Helper()
	c, got := dialProtos(t, url, []string{subprotocol}, nil)
	if got != subprotocol {
		t.Fatalf("selected %q, want %q", got, subprotocol)
	}
	return &packedClient{t: t, c: c, proto: subprotocol == ws.SubprotocolProto}
}

// write sends one packed frame holding msgs (JSON objects): a text frame of
// ndjson, or for proto a binary frame of length-prefixed protos.
func (p *packedClient) write(msgs ...string) {
	p.t.Helper()
	typ, b := websocket.MessageText, []byte(strings.Join(msgs, "\n"))
	if p.proto {
		typ, b = websocket.MessageBinary, nil
		for _, s := range msgs {
			m := new(api.Message)
			if err := protojson.Unmarshal([]byte(s), m); err != nil {
				p.t.Fatalf("test message %q: %v", s, err)
			}
			e, err := proto.Marshal(m)
			if err != nil {
				p.t.Fatal(err)
			}
			b = append(binary.AppendUvarint(b, uint64(len(e))), e...)
		}
	}
	p.writeRaw(typ, b)
}

func (p *packedClient) writeRaw(typ websocket.MessageType, b []byte) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.c.Write(ctx, typ, b); err != nil {
		p.t.Fatal(err)
	}
}

// next returns the next message, reading a frame when none is pending. A
// proto message is returned as the JSON the ndjson mode would send
// (protojson with browser numbers), so that both modes check alike.
func (p *packedClient) next() map[string]any {
	p.t.Helper()
	for len(p.pending) == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		typ, data, err := p.c.Read(ctx)
		cancel()
		if err != nil {
			p.t.Fatalf("read: %v", err)
		}
		msgs, err := splitPacked(p.proto, typ, data)
		if err != nil {
			p.t.Fatal(err)
		}
		p.frames = append(p.frames, frameStat{msgs: len(msgs), bytes: len(data)})
		p.pending = msgs
	}
	m := p.pending[0]
	p.pending = p.pending[1:]
	return m
}

// splitPacked parses a packed frame the server sent.
func splitPacked(isProto bool, typ websocket.MessageType, data []byte) ([]map[string]any, error) {
	var out []map[string]any
	if !isProto {
		if typ != websocket.MessageText {
			return nil, fmt.Errorf("ndjson: frame type %v", typ)
		}
		if !utf8.Valid(data) {
			return nil, fmt.Errorf("ndjson: invalid UTF-8 %q", data)
		}
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				return nil, fmt.Errorf("ndjson: line %q of %q is not a JSON object: %v", line, data, err)
			}
			out = append(out, m)
		}
		return out, nil
	}
	if typ != websocket.MessageBinary {
		return nil, fmt.Errorf("proto: frame type %v", typ)
	}
	for len(data) > 0 {
		n, w := binary.Uvarint(data)
		if w <= 0 || n > uint64(len(data)-w) {
			return nil, fmt.Errorf("proto: bad length prefix in % x", data)
		}
		m := new(api.Message)
		if err := proto.Unmarshal(data[w:w+int(n)], m); err != nil {
			return nil, fmt.Errorf("proto: %v", err)
		}
		data = data[w+int(n):]
		j, err := protojson.Marshal(m)
		if err != nil {
			return nil, err
		}
		var mm map[string]any
		if err := json.Unmarshal(ws.BrowserJSON(j), &mm); err != nil {
			return nil, err
		}
		out = append(out, mm)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("proto: empty frame")
	}
	return out, nil
}

func (p *packedClient) nextKind(kind string) map[string]any {
	p.t.Helper()
	for {
		m := p.next()
		k, _ := m["kind"].(string)
		if k == "" {
			k = "KIND_MESSAGE"
		}
		if _, isErr := m["error"]; isErr && kind != "error" {
			p.t.Fatalf("unexpected error frame %v", m)
		}
		if k == kind || (kind == "error" && m["error"] != nil) {
			return m
		}
	}
}

// errorText returns the message of the next error, which must come next
// (after any acks).
func (p *packedClient) nextError() string {
	p.t.Helper()
	m := p.nextKind("error")
	return m["error"].(map[string]any)["message"].(string)
}

func (p *packedClient) closed() websocket.CloseError {
	p.t.Helper()
	return (&client{t: p.t, c: p.c}).closed()
}

var packedModes = []string{ws.SubprotocolNDJSON, ws.SubprotocolProto}

// TestSubprotocolNegotiation: the server selects the first subprotocol it
// speaks in the client's order of preference, never a token, and frames
// the connection accordingly; without an offer it is the seed's framing.
func TestSubprotocolNegotiation(t *testing.T) {
	t.Parallel()
	url := newServer(t, nil)
	for _, tc := range []struct {
		name   string
		offer  []string
		want   string
		framed string // "json", "ndjson" or "proto"
	}{
		{"none", nil, "", "json"},
		{"chat.v1", []string{"chat.v1"}, "chat.v1", "json"},
		{"ndjson", []string{"chat.v1.ndjson"}, "chat.v1.ndjson", "ndjson"},
		{"proto", []string{"chat.v1.proto"}, "chat.v1.proto", "proto"},
		{"proto before ndjson", []string{"chat.v1.proto", "chat.v1.ndjson", "chat.v1"}, "chat.v1.proto", "proto"},
		{"ndjson before proto", []string{"chat.v1.ndjson", "chat.v1.proto"}, "chat.v1.ndjson", "ndjson"},
		{"default preferred", []string{"chat.v1", "chat.v1.ndjson"}, "chat.v1", "json"},
		{"unknown mode falls back", []string{"chat.v2.future", "chat.v1"}, "chat.v1", "json"},
		{"nothing spoken", []string{"chat.v2.future"}, "", "json"},
		{"token skipped", []string{"bearer.abc", "chat.v1.ndjson"}, "chat.v1.ndjson", "ndjson"},
		{"spelled as offered", []string{"Chat.V1.NDJSON"}, "Chat.V1.NDJSON", "ndjson"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, got := dialProtos(t, url, tc.offer, nil)
			if got != tc.want {
				t.Fatalf("selected %q, want %q", got, tc.want)
			}
			room := "neg-" + strings.ReplaceAll(tc.name, " ", "-")
			// Every mode's first frame is one JSON text frame (a client
			// offering a packed mode may still send the seed's frames).
			cl := &client{t: t, c: c}
			cl.send(`{"user":"n","room":"` + room + `","join":{"events":true}}`)
			if tc.framed == "json" {
				cl.nextKind("KIND_LIVE") // one JSON object per frame
				return
			}
			p := &packedClient{t: t, c: c, proto: tc.framed == "proto"}
			p.nextKind("KIND_LIVE")
		})
	}
}

// TestPackedModesCarryTheToken: a browser offers a packed mode beside its
// "bearer.<jwt>" token; the server selects the mode, never the token, and
// authenticates the connection with it.
func TestPackedModesCarryTheToken(t *testing.T) {
	t.Parallel()
	secret := []byte(strings.Repeat("k", 32))
	v, err := auth.NewVerifier(auth.Config{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	url := newServer(t, nil, func(c *ws.Config) { c.Verifier = v })
	tok, err := auth.Mint(secret, "alice", nil, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range packedModes {
		for _, offer := range [][]string{{mode, auth.SubprotocolPrefix + tok}, {auth.SubprotocolPrefix + tok, mode, auth.Subprotocol}} {
			t.Run(strings.Join([]string{mode, fmt.Sprint(offer[0] == mode)}, "/"), func(t *testing.T) {
				t.Parallel()
				c, got := dialProtos(t, url, offer, nil)
				if got != mode {
					t.Fatalf("selected %q, want %q", got, mode)
				}
				p := &packedClient{t: t, c: c, proto: mode == ws.SubprotocolProto}
				p.write(`{"room":"tok","join":{"events":true}}`, `{"text":"hi","clientId":"t1"}`)
				p.nextKind("KIND_LIVE")
				if m := p.nextKind("KIND_ACK"); m["clientId"] != "t1" {
					t.Fatalf("got %v", m)
				}
			})
		}
	}
	// Without the token: refused before the upgrade, whatever the mode.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{ws.SubprotocolNDJSON}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: err=%v resp=%v", err, resp)
	}
}

// TestPackedRoundTrip: in each packed mode a client sends many messages
// in one frame (its join among them), and receives them back packed: a
// replay of 100 messages comes in frames that hold many each, none over
// MaxPackedBytes, in order, every text intact (newlines, quotes and
// non-ASCII included); the live messages and acks too.
func TestPackedRoundTrip(t *testing.T) {
	t.Parallel()
	url := newServer(t, nil)
	const n = 100 // the default history: all of it replayed
	for _, mode := range packedModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			room := "rt-" + strings.ReplaceAll(mode, ".", "-")
			listener := dialPacked(t, url, mode)
			listener.write(`{"user":"listener","room":"` + room + `","join":{"events":true}}`)
			listener.nextKind("KIND_LIVE")

			text := func(i int) string {
				return fmt.Sprintf("message %d: \"quoted\"\nsecond line, ünïcødé €, tab\t%s", i, strings.Repeat("x", 500))
			}
			enc := func(s string) string { b, _ := json.Marshal(s); return string(b) }
			sender := dialPacked(t, url, mode)
			msgs := []string{`{"user":"sender","room":"` + room + `","join":{"events":true}}`}
			for i := range n {
				msgs = append(msgs, fmt.Sprintf(`{"text":%s,"clientId":"c%d"}`, enc(text(i)), i))
			}
			sender.write(msgs...) // one frame: the join and 100 messages
			sender.nextKind("KIND_LIVE")
			for i := range n {
				if m := sender.nextKind("KIND_ACK"); m["clientId"] != fmt.Sprintf("c%d", i) || m["seq"] != jsonSeq(i+1) {
					t.Fatalf("ack %d: got %v", i, m)
				}
			}
			for i := range n {
				m := listener.nextKind("KIND_MESSAGE")
				if m["text"] != text(i) || m["seq"] != jsonSeq(i+1) || m["user"] != "sender" {
					t.Fatalf("live %d: got %v", i, m)
				}
			}

			// The replay is one batch: packed, bounded.
			late := dialPacked(t, url, mode)
			late.write(`{"user":"late","room":"` + room + `","join":{"events":true}}`)
			for i := range n {
				m := late.nextKind("KIND_MESSAGE")
				if m["text"] != text(i) || m["seq"] != jsonSeq(i+1) {
					t.Fatalf("replay %d: got %v", i, m)
				}
			}
			late.nextKind("KIND_LIVE")
			total, most := 0, 0
			for _, f := range late.frames {
				total += f.msgs
				most = max(most, f.msgs)
				if f.msgs > 1 && f.bytes > ws.MaxPackedBytes {
					t.Fatalf("a frame of %d messages has %d bytes, over %d", f.msgs, f.bytes, ws.MaxPackedBytes)
				}
			}
			// ~650 bytes a message: some 25 to a frame, and at least
			// 100 × 650 / 16 KiB frames.
			if most < 10 || len(late.frames) < 4 || len(late.frames) > total/10 {
				t.Fatalf("%d messages in %d frames (at most %d in one): not packed as bounded", total, len(late.frames), most)
			}
		})
	}
}

// TestPackedInvalidInput: in a packed frame each malformed message is
// answered on its own, in order with the others' acks, and counts against
// the invalid-frame budget; a broken length prefix ends its frame; a frame
// without a message is answered too; the read limit still applies to the
// whole frame. Answers come in the connection's mode.
func TestPackedInvalidInput(t *testing.T) {
	t.Parallel()
	url := newServer(t, func(c *hub.Config) { c.MaxInvalidFrames = 6; c.MaxTextBytes = 100 })
	t.Run("ndjson lines", func(t *testing.T) {
		t.Parallel()
		p := dialPacked(t, url, ws.SubprotocolNDJSON)
		// Before the join: a bad line is answered, the join after it in
		// the same frame works. A trailing newline and blank lines are
		// nothing.
		p.write(`not json`, "", `{"user":"a","room":"inv-nd","join":{"events":true}}`, " \r", `{"text":"one","clientId":"1"}`, `{"text":5}`, `{"text":"two","clientId":"2"}`+"\n")
		if e := p.nextError(); !strings.Contains(e, "not a valid chat.Message in JSON") {
			t.Fatalf("got %q", e)
		}
		p.nextKind("KIND_LIVE")
		if m := p.nextKind("KIND_ACK"); m["clientId"] != "1" {
			t.Fatalf("got %v", m)
		}
		if e := p.nextError(); !strings.Contains(e, "not a valid chat.Message") {
			t.Fatalf("got %q", e)
		}
		if m := p.nextKind("KIND_ACK"); m["clientId"] != "2" {
			t.Fatalf("got %v", m)
		}
		p.writeRaw(websocket.MessageText, []byte("\n\n"))
		if e := p.nextError(); e != "frame holds no message" {
			t.Fatalf("got %q", e)
		}
		// Two spent before, one here: three more in one frame end it.
		p.write(`{"text":""}`, `[]`, `{"kind":"KIND_ACK","text":"x"}`, `{"text":"never","clientId":"3"}`)
		for range 3 {
			p.nextError()
		}
		if ce := p.closed(); ce.Code != websocket.StatusPolicyViolation || ce.Reason != "too many invalid frames" {
			t.Fatalf("closed with %d %q", ce.Code, ce.Reason)
		}
	})
	t.Run("proto messages", func(t *testing.T) {
		t.Parallel()
		p := dialPacked(t, url, ws.SubprotocolProto)
		p.write(`{"user":"a","room":"inv-pb","join":{"events":true}}`)
		p.nextKind("KIND_LIVE")
		good := func(id string) []byte {
			b, _ := proto.Marshal(&api.Message{Text: "ok", ClientId: id})
			return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
		}
		// Field 2 (text) holding invalid UTF-8, and bytes that are no
		// protobuf at all, between good messages: each answered in turn.
		badUTF8 := []byte{0x12, 0x02, 0xff, 0xfe}
		garbage := []byte{0xff, 0xff, 0xff}
		frame := good("1")
		frame = append(append(frame, byte(len(badUTF8))), badUTF8...)
		frame = append(frame, good("2")...)
		frame = append(append(frame, byte(len(garbage))), garbage...)
		frame = append(frame, good("3")...)
		p.writeRaw(websocket.MessageBinary, frame)
		for _, want := range []string{"1", "!protobuf", "2", "!protobuf", "3"} {
			if want[0] == '!' {
				if e := p.nextError(); !strings.Contains(e, "not a valid chat.Message in protobuf") {
					t.Fatalf("got %q", e)
				}
				continue
			}
			if m := p.nextKind("KIND_ACK"); m["clientId"] != want {
				t.Fatalf("got %v, want the ack of %s", m, want)
			}
		}
		// A length past the frame's end: the rest is skipped, one error.
		p.writeRaw(websocket.MessageBinary, append(good("4"), 0x7f, 1, 2, 3))
		if m := p.nextKind("KIND_ACK"); m["clientId"] != "4" {
			t.Fatalf("got %v", m)
		}
		if e := p.nextError(); !strings.Contains(e, "length-prefixed") {
			t.Fatalf("got %q", e)
		}
		// A varint that never ends, and an empty frame.
		p.writeRaw(websocket.MessageBinary, bytes.Repeat([]byte{0x80}, 11))
		if e := p.nextError(); !strings.Contains(e, "length-prefixed") {
			t.Fatalf("got %q", e)
		}
		p.writeRaw(websocket.MessageBinary, nil)
		if e := p.nextError(); e != "frame holds no message" {
			t.Fatalf("got %q", e)
		}
		// Five spent; the sixth ends the connection.
		p.writeRaw(websocket.MessageBinary, append(good("5"), 1, 0xff))
		p.nextKind("KIND_ACK")
		p.nextError()
		if ce := p.closed(); ce.Code != websocket.StatusPolicyViolation || ce.Reason != "too many invalid frames" {
			t.Fatalf("closed with %d %q", ce.Code, ce.Reason)
		}
	})
	t.Run("proto mode takes ndjson too", func(t *testing.T) {
		t.Parallel()
		p := dialPacked(t, url, ws.SubprotocolProto)
		p.writeRaw(websocket.MessageText, []byte(`{"user":"a","room":"inv-mix","join":{"events":true}}`+"\n"+`{"text":"x","clientId":"j"}`))
		p.nextKind("KIND_LIVE")
		if m := p.nextKind("KIND_ACK"); m["clientId"] != "j" {
			t.Fatalf("got %v", m)
		}
	})
	t.Run("error before join is packed", func(t *testing.T) {
		t.Parallel()
		for _, mode := range packedModes {
			p := dialPacked(t, url, mode)
			p.write(`{"user":"` + strings.Repeat("u", 65) + `"}`)
			if e := p.nextError(); !strings.Contains(e, "longer than 64") {
				t.Fatalf("%s: got %q", mode, e)
			}
			if ce := p.closed(); ce.Code != websocket.StatusPolicyViolation {
				t.Fatalf("%s: closed with %v", mode, ce)
			}
		}
	})
	t.Run("read limit", func(t *testing.T) {
		t.Parallel()
		for _, mode := range packedModes {
			p := dialPacked(t, url, mode)
			p.write(`{"user":"a","room":"inv-limit"}`)
			// Many small messages, over the read limit (4.6 KB with
			// 100-byte texts) together.
			msgs := make([]string, 0, 500)
			for range cap(msgs) {
				msgs = append(msgs, `{"text":"x"}`)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			typ, b := websocket.MessageText, []byte(strings.Join(msgs, "\n"))
			if mode == ws.SubprotocolProto {
				typ, b = websocket.MessageBinary, bytes.Repeat([]byte{0x03, 0x12, 0x01, 'x'}, 2000)
			}
			_ = p.c.Write(ctx, typ, b)
			cancel()
			if ce := p.closed(); ce.Code != websocket.StatusMessageTooBig {
				t.Fatalf("%s: closed with %v", mode, ce)
			}
		}
	})
}

// TestDefaultModeIsOneMessagePerFrame: without a packed subprotocol
// nothing changes: a text frame is one JSON message (two lines in one are
// one malformed frame), and binary frames are refused.
func TestDefaultModeIsOneMessagePerFrame(t *testing.T) {
	t.Parallel()
	url := newServer(t, nil)
	for _, offer := range [][]string{nil, {auth.Subprotocol}} {
		c, _ := dialProtos(t, url, offer, nil)
		cl := &client{t: t, c: c}
		cl.send(`{"user":"d","room":"default-mode","join":{"events":true}}`)
		cl.nextKind("KIND_LIVE")
		cl.send(`{"text":"a","clientId":"1"}` + "\n" + `{"text":"b","clientId":"2"}`)
		if e := cl.nextKind("error")["error"].(map[string]any)["message"].(string); !strings.Contains(e, "not a valid chat.Message in JSON") {
			t.Fatalf("got %q", e)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.Write(ctx, websocket.MessageBinary, []byte{1, 0})
		cancel()
		if ce := cl.closed(); ce.Code != websocket.StatusUnsupportedData {
			t.Fatalf("closed with %v", ce)
		}
	}
}

// TestMixedModesInOneRoom: one message reaches a seed client, an ndjson
// client and a proto client in their own framing (the encodings are
// shared per frame, not per mode).
func TestMixedModesInOneRoom(t *testing.T) {
	t.Parallel()
	url := newServer(t, nil)
	seed := dial(t, url, `{"user":"seed","room":"mixed"}`)
	nd := dialPacked(t, url, ws.SubprotocolNDJSON)
	nd.write(`{"user":"nd","room":"mixed","join":{"events":true}}`)
	nd.nextKind("KIND_LIVE")
	pb := dialPacked(t, url, ws.SubprotocolProto)
	pb.write(`{"user":"pb","room":"mixed","join":{"events":true}}`)
	pb.nextKind("KIND_LIVE")
	for i := range 3 {
		text := fmt.Sprintf("to all %d", i)
		pub := dial(t, url, `{"user":"pub","room":"mixed","text":"`+text+`"}`)
		if m := seed.nextKind("KIND_MESSAGE"); m["text"] != text {
			t.Fatalf("seed got %v", m)
		}
		for _, p := range []*packedClient{nd, pb} {
			if m := p.nextKind("KIND_MESSAGE"); m["text"] != text || m["seq"] != jsonSeq(i+1) {
				t.Fatalf("packed got %v", m)
			}
		}
		pub.c.CloseNow()
	}
}
