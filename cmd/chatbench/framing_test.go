package main

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
)

func TestSplitNDJSON(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{`{"a":1}`, []string{`{"a":1}`}, false},
		{`{"a":1}` + "\n" + `{"b":2}` + "\n" + `{"c":3}`, []string{`{"a":1}`, `{"b":2}`, `{"c":3}`}, false},
		{"", nil, true},
		{"\n", nil, true},
		{`{"a":1}` + "\n", []string{`{"a":1}`}, true},
		{`{"a":1}` + "\n\n" + `{"b":2}`, []string{`{"a":1}`}, true},
	} {
		var got []string
		err := splitNDJSON([]byte(c.in), func(m []byte) { got = append(got, string(m)) })
		if (err != nil) != c.bad || strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("splitNDJSON(%q) = %q, %v; want %q, error %v", c.in, got, err, c.want, c.bad)
		}
	}
}

func TestSplitVarint(t *testing.T) {
	frame := func(msgs ...string) []byte {
		var b []byte
		for _, m := range msgs {
			b = append(binary.AppendUvarint(b, uint64(len(m))), m...)
		}
		return b
	}
	long := strings.Repeat("x", 300) // a two-byte prefix
	for _, c := range []struct {
		name string
		in   []byte
		want []string
		bad  bool
	}{
		{"one", frame("abc"), []string{"abc"}, false},
		{"three", frame("a", long, ""), []string{"a", long, ""}, false},
		{"empty frame", nil, nil, true},
		{"prefix past the end", append(frame("ab"), 5, 'x'), []string{"ab"}, true},
		{"truncated prefix", append(frame("ab"), 0x80), []string{"ab"}, true},
		{"prefix over 64 bits", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, nil, true},
		{"huge length", binary.AppendUvarint(nil, 1<<63), nil, true},
	} {
		var got []string
		err := splitVarint(c.in, func(m []byte) { got = append(got, string(m)) })
		if (err != nil) != c.bad || strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%s: splitVarint(% x) = %q, %v; want %q, error %v", c.name, c.in, got, err, c.want, c.bad)
		}
	}
}

// TestDecodeFrame: the std client decodes each framing into messages, and
// a bad frame is a *frameError with the messages before the bad part.
func TestDecodeFrame(t *testing.T) {
	m1 := &api.Message{User: "p1", Text: "0:1:2:ab", Room: "bench0", Seq: 7}
	m2 := &api.Message{Kind: api.Kind_KIND_LIVE, Room: "bench1"}
	j1, _ := protojson.Marshal(m1)
	j2, _ := protojson.Marshal(m2)
	p1, _ := proto.Marshal(m1)
	p2, _ := proto.Marshal(m2)
	packed := append(binary.AppendUvarint(nil, uint64(len(p1))), p1...)
	packed = append(binary.AppendUvarint(packed, uint64(len(p2))), p2...)
	ndjson := append(append(append([]byte(nil), j1...), '\n'), j2...)
	for _, c := range []struct {
		name    string
		typ     websocket.MessageType
		framing string
		in      []byte
		want    int
		bad     bool
	}{
		{"json", websocket.MessageText, framingJSON, j1, 1, false},
		{"ndjson", websocket.MessageText, framingNDJSON, ndjson, 2, false},
		{"proto", websocket.MessageBinary, framingProto, packed, 2, false},
		{"ndjson as json", websocket.MessageText, framingJSON, ndjson, 0, true},
		{"bad json part", websocket.MessageText, framingNDJSON, append(append([]byte(nil), j1...), "\n{"...), 1, true},
		{"broken prefix", websocket.MessageBinary, framingProto, append(append([]byte(nil), packed...), 0x80), 2, true},
	} {
		msgs, err := decodeFrame(c.typ, c.framing, c.in)
		var fe *frameError
		if len(msgs) != c.want || (err != nil) != c.bad || err != nil && !errors.As(err, &fe) {
			t.Errorf("%s: %d messages, %v; want %d, error %v", c.name, len(msgs), err, c.want, c.bad)
			continue
		}
		if len(msgs) > 0 && !proto.Equal(msgs[0], m1) {
			t.Errorf("%s: first message %v, want %v", c.name, msgs[0], m1)
		}
		if len(msgs) > 1 && !proto.Equal(msgs[1], m2) {
			t.Errorf("%s: second message %v, want %v", c.name, msgs[1], m2)
		}
	}
}

func TestSubprotocol(t *testing.T) {
	for _, c := range []struct{ client, framing, want string }{
		{"fast", "json", ""},
		{"std", "json", "chat.v1"},
		{"fast", "ndjson", "chat.v1.ndjson"},
		{"std", "ndjson", "chat.v1.ndjson"},
		{"fast", "proto", "chat.v1.proto"},
		{"std", "proto", "chat.v1.proto"},
	} {
		cfg := &config{wsClient: c.client, wsFraming: c.framing}
		if got := cfg.subprotocol(); got != c.want {
			t.Errorf("%s/%s: subprotocol %q, want %q", c.client, c.framing, got, c.want)
		}
	}
	if checkSubprotocol("chat.v1.ndjson", "Chat.V1.NDJSON") != nil || checkSubprotocol("chat.v1.proto", "") == nil || checkSubprotocol("", "") != nil {
		t.Error("checkSubprotocol: want a case-insensitive match, and an error on a mismatch")
	}
}
