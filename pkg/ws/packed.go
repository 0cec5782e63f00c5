package ws

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/hub"
)

// The packed subprotocols. A client that offers one of them (in
// Sec-WebSocket-Protocol, beside a "bearer.<jwt>" token if it has one)
// and sees the server select it receives several messages per WebSocket
// frame, and may send several per frame itself. The server never selects
// one a client did not offer: the default (auth.Subprotocol, chat.v1, or
// no subprotocol at all) stays one JSON message per text frame, which is
// what the seed's snippet parses.
const (
	// SubprotocolNDJSON packs messages as newline-delimited JSON: one text
	// frame holds one or more messages, each the same JSON as a frame of
	// the default mode, separated by "\n" (there is none after the last).
	// JSON as the node writes it holds no raw newline (protojson escapes
	// one in a string as \n and breaks no lines), so a reader splits the
	// frame on "\n" and parses each part.
	SubprotocolNDJSON = "chat.v1.ndjson"
	// SubprotocolProto packs messages as protobuf: one binary frame holds
	// one or more chat.Messages, each as its length in bytes (an unsigned
	// varint, as protobuf writes them) followed by its encoding.
	SubprotocolProto = "chat.v1.proto"
)

// MaxPackedBytes bounds the payload of a packed frame the server sends: a
// batch that holds more becomes several frames, and a frame holds more
// than one message only while they fit. A message bigger than the bound
// alone is sent in a frame of its own, as in the default mode.
//
// 16 KiB is half of coder/websocket's default read limit (32 KiB, the
// smallest default among common client libraries; browsers have none), so
// a standard client reads every packed frame without raising its limit;
// and at 16 KiB a frame holds some 80 chat messages, well past the point
// where the per-frame cost a reader pays is lost in the per-message cost
// of parsing each one, so larger frames would save nothing measurable
// (BenchmarkStandardClient). The bound is in bytes, not messages: bytes
// are what a reader must hold at once.
const MaxPackedBytes = 16 << 10

// mode is a connection's framing, chosen at the upgrade by subprotocol.
type mode uint8

const (
	// modeSingle: one JSON message per text frame; binary frames are
	// refused (1003). The default.
	modeSingle mode = iota
	// modeNDJSON: the server sends SubprotocolNDJSON frames.
	modeNDJSON
	// modeProto: the server sends SubprotocolProto frames.
	modeProto
)

// In both packed modes the client may send either packing: a text frame is
// newline-delimited JSON, a binary frame length-prefixed protobuf; the
// mode only says what the server sends.

// modeOf returns the mode of a subprotocol the server speaks, and false
// for any other (a token, an unknown protocol).
func modeOf(p string) (mode, bool) {
	switch {
	case strings.EqualFold(p, auth.Subprotocol):
		return modeSingle, true
	case strings.EqualFold(p, SubprotocolNDJSON):
		return modeNDJSON, true
	case strings.EqualFold(p, SubprotocolProto):
		return modeProto, true
	}
	return modeSingle, false
}

// selectSubprotocol returns the subprotocol to select from those r
// offers: the first the server speaks, in the client's order (RFC 6455
// §4.1 lists them "ordered by preference"), spelled as the client spelled
// it (the client compares exactly); "" when it offers none of them.
// Tokens ("bearer.<jwt>") are never selected.
func selectSubprotocol(r *http.Request) string {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				if _, ok := modeOf(p); ok {
					return p
				}
			}
		}
	}
	return ""
}

// appendHeader appends the header of an unmasked, final WebSocket frame
// (RFC 6455 §5.2) with opcode op and a payload of n bytes, as a server
// sends it: at most 10 bytes.
func appendHeader(b []byte, op byte, n int) []byte {
	b = append(b, 0x80|op) // FIN
	switch {
	case n < 126:
		return append(b, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
}

// The opcodes of data frames.
const (
	opText   = 0x1
	opBinary = 0x2
)

// jsonPayload is f's JSON as the default mode sends it (BrowserJSON of
// its protojson): textFrame's cached encoding without its header, so that
// both JSON modes share one encoding per frame.
func jsonPayload(f *hub.Frame) []byte {
	w := f.Wire(textFrame)
	switch w[1] & 0x7F {
	case 126:
		return w[4:]
	case 127:
		return w[10:]
	default:
		return w[2:]
	}
}

// packedScratch is how many bytes of headers, separators and length
// prefixes packing n messages needs at most: a 10-byte frame header and a
// 10-byte varint (or a 1-byte separator) per message.
func packedScratch(n int) int { return 20 * n }

// appendPacked appends to bufs the frames that carry msgs packed in mode
// m (modeNDJSON or modeProto), each payload at most MaxPackedBytes unless
// it is one message. The messages' encodings are shared, not copied: only
// headers, separators and length prefixes are written, into scratch
// (given room for packedScratch(len(msgs)) bytes beyond its length, it
// does not grow). It returns bufs and scratch, extended.
func appendPacked(bufs net.Buffers, scratch []byte, msgs []*hub.Frame, m mode) (net.Buffers, []byte) {
	op, payload, framing := byte(opText), jsonPayload, func(p []byte) int { return 1 }
	if m == modeProto {
		op, payload = opBinary, (*hub.Frame).Proto
		framing = func(p []byte) int { return varintLen(len(p)) }
	}
	for i := 0; i < len(msgs); {
		// msgs[i:j] fill one frame of n payload bytes. In NDJSON the first
		// message has no separator before it: a frame of one message is
		// exactly the default mode's JSON.
		n, j := 0, i
		for ; j < len(msgs); j++ {
			p := payload(msgs[j])
			add := len(p) + framing(p)
			if m == modeNDJSON && j == i {
				add--
			}
			if j > i && n+add > MaxPackedBytes {
				break
			}
			n += add
		}
		s := len(scratch)
		scratch = appendHeader(scratch, op, n)
		bufs = append(bufs, scratch[s:len(scratch):len(scratch)])
		for k := i; k < j; k++ {
			p := payload(msgs[k])
			switch {
			case m == modeProto:
				s := len(scratch)
				scratch = binary.AppendUvarint(scratch, uint64(len(p)))
				bufs = append(bufs, scratch[s:len(scratch):len(scratch)])
			case k > i:
				s := len(scratch)
				scratch = append(scratch, '\n')
				bufs = append(bufs, scratch[s:len(scratch):len(scratch)])
			}
			bufs = append(bufs, p)
		}
		i = j
	}
	return bufs, scratch
}

// varintLen is the length of n as an unsigned varint.
func varintLen(n int) int {
	l := 1
	for ; n >= 0x80; n >>= 7 {
		l++
	}
	return l
}

// protoUnmarshal decodes a client's binary message. Unknown fields are
// dropped, as in JSON, so that newer clients work with older nodes and no
// stray bytes are kept.
var protoUnmarshal = proto.UnmarshalOptions{DiscardUnknown: true}

// Decoding errors of packed frames; their texts are fit to show the
// client.
var (
	errEmptyFrame = errors.New("frame holds no message")
	errBadPrefix  = errors.New("binary frame is not a sequence of length-prefixed chat.Messages: the rest of the frame is skipped")
)

// DecodeProto parses one message of a client's binary frame: a
// chat.Message in protobuf (the bytes after its length prefix). Unknown
// fields are ignored; strings must be valid UTF-8 (proto3 requires it).
// The error is fit to show the client.
func DecodeProto(data []byte) (*api.Message, error) {
	m := new(api.Message)
	if err := protoUnmarshal.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("message is not a valid chat.Message in protobuf: %s", hub.ClientText(err.Error(), 200))
	}
	return m, nil
}

// packedReader splits the packed frames a client sends into messages, one
// at a time, so that a frame's messages are handled in order and each
// malformed one is answered (and counted) on its own. Only the
// connection's reading goroutine uses it.
type packedReader struct {
	rest   []byte // what is left of the current frame; nil when done
	binary bool   // the current frame is binary (protobuf)
}

// start takes a new frame. It reports errEmptyFrame for a frame that holds
// no message (empty, or only blank lines): it costs an answer, so it
// counts as invalid.
func (p *packedReader) start(typ websocket.MessageType, data []byte) error {
	p.binary = typ == websocket.MessageBinary
	if len(data) == 0 || !p.binary && blank(data) {
		p.rest = nil
		return errEmptyFrame
	}
	p.rest = data
	return nil
}

// more reports whether the current frame has more to read.
func (p *packedReader) more() bool { return p.rest != nil }

// next returns the current frame's next message, or the error for a
// malformed one; both nil when only blank lines were left. A binary
// frame's broken length prefix ends the frame: what follows cannot be
// found.
func (p *packedReader) next() (*api.Message, error) {
	if !p.binary {
		line := p.rest
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line, p.rest = line[:i], line[i+1:]
		} else {
			p.rest = nil
		}
		p.done()
		if blank(line) {
			return nil, nil
		}
		return DecodeFrame(line)
	}
	n, w := binary.Uvarint(p.rest)
	if w <= 0 || n > uint64(len(p.rest)-w) {
		p.rest = nil
		return nil, errBadPrefix
	}
	b := p.rest[w : w+int(n)]
	p.rest = p.rest[w+int(n):]
	p.done()
	return DecodeProto(b)
}

// done drops an exhausted frame.
func (p *packedReader) done() {
	if len(p.rest) == 0 {
		p.rest = nil
	}
}

// blank reports whether b is only JSON whitespace: an empty line (a
// trailing newline, a CRLF's CR) is skipped, not answered.
func blank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// errorFrame encodes an error message as mode m sends it, with its opcode.
func errorFrame(m mode, msg *api.Message) (websocket.MessageType, []byte, error) {
	if m == modeProto {
		b, err := proto.Marshal(msg)
		if err != nil {
			return 0, nil, err
		}
		return websocket.MessageBinary, append(binary.AppendUvarint(nil, uint64(len(b))), b...), nil
	}
	b, err := protojson.Marshal(msg)
	if err != nil {
		return 0, nil, err
	}
	return websocket.MessageText, BrowserJSON(b), nil // retryAfterMs as a number, like every other frame
}
