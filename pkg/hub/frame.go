package hub

import (
	"encoding/binary"
	"errors"
	"strings"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
)

// Frame is one outgoing message, shared by every recipient on this node. It
// encodes itself at most once per wire format, on first use, so fan-out to a
// thousand WebSocket clients costs one JSON encoding.
//
// A Frame and its Message are immutable once created.
type Frame struct {
	msg    *api.Message
	size   int    // see Size
	origin string // the publishing session's tag; never sent
	replay bool   // from history, not live: no fan-out lag to measure
	// quiet frames (an edit, delete or reaction, a tombstone) go only to
	// sessions with changes; event frames go to their origin too.
	quiet, event bool

	jsonOnce  sync.Once
	json      []byte
	protoOnce sync.Once
	proto     []byte
	wireOnce  sync.Once
	wire      []byte
}

// NewFrame wraps m, which the caller must not modify afterwards.
func NewFrame(m *api.Message) *Frame {
	ev := isStateEvent(m.Kind)
	return &Frame{msg: m, size: frameSize(m), event: ev, quiet: ev || m.Deleted}
}

// Message returns the frame's message. Callers must not modify it.
func (f *Frame) Message() *api.Message { return f.msg }

// Size is what the frame is charged in a session's queue and in a replay's
// byte bound: the length of its JSON encoding (the larger of the edges'
// encodings), computed when the frame is made, without encoding it, so the
// fan-out path does no encoding. Escapes are counted exactly (a control
// character costs 6 bytes, as in the JSON), field names and numbers by a
// constant that covers them.
func (f *Frame) Size() int { return f.size }

// frameOverhead covers a frame's JSON field names, numbers, enum names and
// punctuation.
const frameOverhead = 192

func frameSize(m *api.Message) int {
	n := frameOverhead + jsonLen(m.GetUser()) + jsonLen(m.GetText()) + jsonLen(m.GetRoom()) +
		jsonLen(m.GetClientId()) + jsonLen(m.GetEpoch())
	if e := m.GetError(); e != nil {
		n += jsonLen(e.GetMessage())
	}
	for _, r := range m.GetReactions() {
		n += 32 + jsonLen(r.GetEmoji())
	}
	if p := m.GetPage(); p != nil {
		for _, pm := range p.GetMessages() {
			n += frameSize(pm)
		}
	}
	return n
}

// jsonLen is the length of s as a JSON string's content: control
// characters become \uXXXX, quotes and backslashes are escaped. (Strings
// are valid UTF-8, which protojson writes as is.)
func jsonLen(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20:
			n += 5
		case c == '"' || c == '\\':
			n++
		}
	}
	return n
}

var jsonOpts = protojson.MarshalOptions{}

// JSON returns the protojson encoding (the gateway's mapping), computed once.
// It never fails: a message that protojson refuses (a string that is not
// valid UTF-8, which validation should have kept out) is encoded with its
// invalid bytes replaced by U+FFFD.
func (f *Frame) JSON() []byte {
	f.jsonOnce.Do(func() {
		b, err := jsonOpts.Marshal(f.msg)
		if err != nil {
			b, err = jsonOpts.Marshal(validUTF8(f.msg))
		}
		if err != nil {
			// Cannot happen for a Message of valid strings, ints and
			// enums; an empty object keeps the wire valid all the same.
			b = []byte("{}")
		}
		f.json = b
	})
	return f.json
}

// Proto returns the protobuf encoding, computed once. Like JSON it never
// fails: invalid UTF-8 is replaced first.
func (f *Frame) Proto() []byte {
	f.protoOnce.Do(func() {
		b, err := proto.Marshal(f.msg)
		if err != nil {
			b, _ = proto.Marshal(validUTF8(f.msg))
		}
		f.proto = b
	})
	return f.proto
}

// validUTF8 returns a copy of m whose strings are valid UTF-8.
func validUTF8(m *api.Message) *api.Message {
	c := proto.Clone(m).(*api.Message)
	fix := func(s *string) { *s = strings.ToValidUTF8(*s, "\uFFFD") }
	fix(&c.User)
	fix(&c.Text)
	fix(&c.Room)
	fix(&c.ClientId)
	fix(&c.Epoch)
	if c.Error != nil {
		fix(&c.Error.Message)
	}
	if j := c.Join; j != nil {
		fix(&j.Epoch)
	}
	return c
}

// Wire returns an edge's own encoding of the frame (a WebSocket frame with
// its header, say), computed once by encode on first use and shared by every
// recipient. An edge must always pass the same encode function.
func (f *Frame) Wire(encode func(*Frame) []byte) []byte {
	f.wireOnce.Do(func() { f.wire = encode(f) })
	return f.wire
}

// Records are what the hub stores in history and sends on the bus: a version
// byte, the publishing session's origin tag (so the node that published can
// skip the sender), and the protobuf message.
const recordVersion = 1

var errBadRecord = errors.New("hub: malformed record")

func encodeRecord(origin string, m *api.Message) ([]byte, error) {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(origin)+proto.Size(m))
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, uint64(len(origin)))
	b = append(b, origin...)
	return proto.MarshalOptions{}.MarshalAppend(b, m)
}

func decodeRecord(b []byte) (origin string, m *api.Message, err error) {
	if len(b) < 2 || b[0] != recordVersion {
		return "", nil, errBadRecord
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || uint64(len(b)-1-k) < n {
		return "", nil, errBadRecord
	}
	origin = string(b[1+k : 1+k+int(n)])
	m = new(api.Message)
	if err := proto.Unmarshal(b[1+k+int(n):], m); err != nil {
		return "", nil, errors.Join(errBadRecord, err)
	}
	return origin, m, nil
}
