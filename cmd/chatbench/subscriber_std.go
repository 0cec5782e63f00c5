package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
)

// stdSub is a WebSocket subscriber of the std client (-ws-client std):
// what a typical Go app does with a standard WebSocket library. It reads
// frame by frame with coder/websocket's Reader into a buffer reset per
// frame, and decodes every message fully into a new api.Message (as
// pkg/client does): protojson for a text frame (split on '\n' first with
// chat.v1.ndjson), proto for a binary frame of chat.v1.proto. What that
// costs is the point: client_cpu_s_per_100k against the fast client's.
type stdSub struct {
	c       *websocket.Conn
	id      int
	framing string
	buf     bytes.Buffer // the frame being read, reused
}

// stdDecode is how the std client decodes JSON: tolerant of fields a
// newer node may add, as an app should be.
var stdDecode = protojson.UnmarshalOptions{DiscardUnknown: true}

func dialStdSub(ctx context.Context, cfg *config, i int) (*stdSub, error) {
	offered := cfg.subprotocol()
	opts := &websocket.DialOptions{HTTPHeader: http.Header{}, Subprotocols: []string{offered}}
	if cfg.token != "" {
		opts.HTTPHeader.Set("Authorization", "Bearer "+cfg.token)
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addr := cfg.subAddr(i)
	c, _, err := websocket.Dial(dctx, "ws://"+addr+wsPath, opts)
	if err != nil {
		return nil, fmt.Errorf("subscriber %d: websocket dial %s: %w", i, addr, err)
	}
	if err := checkSubprotocol(offered, c.Subprotocol()); err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("subscriber %d: %w", i, err)
	}
	c.SetReadLimit(maxFrame)
	s := &stdSub{c: c, id: i, framing: cfg.wsFraming}
	room, join := subJoin(cfg, i)
	b, err := protojson.Marshal(&api.Message{User: subUser(i), Room: room, Join: join})
	if err == nil {
		err = c.Write(dctx, websocket.MessageText, b)
	}
	if err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("subscriber %d: join: %w", i, err)
	}
	if err := s.awaitLive(ctx, cfg.roomsPerConn); err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("subscriber %d: %w", i, err)
	}
	return s, nil
}

// next reads the next frame into s.buf and returns its messages, decoded,
// and when it was read (Unix ns: before decoding, as the fast client's
// time is taken at the read). A frame that does not decode is a
// *frameError (returned with its messages before the bad one), the
// connection going on.
func (s *stdSub) next(ctx context.Context) ([]*api.Message, int64, error) {
	typ, r, err := s.c.Reader(ctx)
	if err != nil {
		return nil, 0, err
	}
	s.buf.Reset()
	if _, err := s.buf.ReadFrom(r); err != nil {
		return nil, 0, err
	}
	now := time.Now().UnixNano()
	msgs, err := decodeFrame(typ, s.framing, s.buf.Bytes())
	return msgs, now, err
}

// decodeFrame decodes the messages of a frame of type typ: a binary frame
// is length-prefixed protobuf (chat.v1.proto), a text frame JSON, split
// on '\n' with framing ndjson. Its error is a frameError: the frame is
// bad, not the connection.
func decodeFrame(typ websocket.MessageType, framing string, b []byte) ([]*api.Message, error) {
	var msgs []*api.Message
	var bad error
	decode := func(msg []byte) {
		m := new(api.Message)
		var err error
		if typ == websocket.MessageBinary {
			err = proto.Unmarshal(msg, m)
		} else {
			err = stdDecode.Unmarshal(msg, m)
		}
		if err != nil {
			bad = fmt.Errorf("bad message %.100q: %w", msg, err)
			return
		}
		msgs = append(msgs, m)
	}
	var err error
	switch {
	case typ == websocket.MessageBinary:
		err = splitVarint(b, decode)
	case framing == framingNDJSON:
		err = splitNDJSON(b, decode)
	default:
		decode(b)
	}
	if err == nil {
		err = bad
	}
	if err != nil {
		return msgs, &frameError{err}
	}
	return msgs, nil
}

// frameError is a frame that does not decode.
type frameError struct{ err error }

func (e *frameError) Error() string { return "bad frame: " + e.err.Error() }
func (e *frameError) Unwrap() error { return e.err }

// awaitLive is wsSub.awaitLive for the std client: it reads until each
// of the k rooms sent its KIND_LIVE, and fails on an error message. ctx
// bounds the wait (coder/websocket closes the connection when it ends).
func (s *stdSub) awaitLive(ctx context.Context, k int) error {
	if k <= 1 {
		return nil
	}
	live := 0
	for live < k {
		msgs, _, err := s.next(ctx)
		for _, m := range msgs {
			switch {
			case m.GetKind() == api.Kind_KIND_LIVE:
				live++
			case m.GetError() != nil:
				return fmt.Errorf("error frame while subscribing to %q: %.200s", m.GetRoom(), m.GetError().GetMessage())
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("waiting for %d rooms to be live (%d were): %w", k, live, err)
		}
	}
	return nil
}

// run reads until the connection ends; the error says why. A frame's
// messages share its arrival time, taken once it is read.
func (s *stdSub) run(st *subStats, p *plan) error {
	ctx := context.Background() // close ends the reads
	for {
		msgs, now, err := s.next(ctx)
		if err != nil {
			var bad *frameError
			if !errors.As(err, &bad) {
				return fmt.Errorf("subscriber %d (ws std): %w", s.id, err)
			}
			st.fail(fmt.Errorf("subscriber %d: %w", s.id, err))
		}
		st.frames++
		for _, m := range msgs {
			st.msgs++
			observeDecoded(st, p, m, now, s.id)
		}
	}
}

// close runs the close handshake: the server's close frame is read by
// run's Reader, or by Close itself when run has ended (5 s at most).
func (s *stdSub) close() { _ = s.c.Close(websocket.StatusNormalClosure, "") }
