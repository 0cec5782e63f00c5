package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
)

// maxFrame bounds one WebSocket frame read from a server.
const maxFrame = 1 << 20

// wsPath is the nodes' WebSocket endpoint.
const wsPath = "/v1/chat/stream"

// dialWS opens a WebSocket to addr, offering subprotocol (none if ""),
// and returns the one the server selected. br, if not nil, holds bytes
// the server sent right after the handshake.
func dialWS(ctx context.Context, addr, token, subprotocol string) (net.Conn, *bufio.Reader, string, error) {
	d := ws.Dialer{Timeout: 10 * time.Second}
	if token != "" {
		d.Header = ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + token}})
	}
	if subprotocol != "" {
		d.Protocols = []string{subprotocol}
	}
	conn, br, hs, err := d.Dial(ctx, "ws://"+addr+wsPath)
	if err != nil {
		return nil, nil, "", fmt.Errorf("websocket dial %s: %w", addr, err)
	}
	return conn, br, hs.Protocol, nil
}

// joinFrame is the first frame of a stream: join room as user with join's
// options, in the page's JSON.
func joinFrame(user, room string, join *api.Join) ws.Frame {
	msg, err := protojson.Marshal(&api.Message{User: user, Room: room, Join: join})
	if err != nil {
		panic(err) // a message of strings, bools and numbers always marshals
	}
	return ws.NewTextFrame(msg)
}

// closeWS sends a normal close frame (under mu, which serializes writes)
// and closes conn.
func closeWS(conn net.Conn, mu *sync.Mutex) {
	mu.Lock()
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = ws.WriteFrame(conn, ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))))
	mu.Unlock()
	conn.Close()
}

// frameReader reads server frames with one buffered reader and one payload
// buffer per connection: no allocation per frame.
type frameReader struct {
	r    *bufio.Reader
	src  *stampReader
	hdr  []byte
	buf  []byte
	frag []byte // a fragmented message being reassembled
}

// stampReader notes when each read from the connection returned: the
// arrival time of every frame in it, taken once per read, not per frame.
type stampReader struct {
	r     io.Reader
	now   int64 // Unix ns
	reads uint64
}

func (s *stampReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.now = time.Now().UnixNano()
	s.reads++
	return n, err
}

func newFrameReader(conn net.Conn, br *bufio.Reader, size int) *frameReader {
	var src io.Reader = conn
	if br != nil {
		if n := br.Buffered(); n > 0 {
			early, _ := br.Peek(n)
			src = io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn)
		}
		ws.PutReader(br)
	}
	sr := &stampReader{r: src}
	return &frameReader{r: bufio.NewReaderSize(sr, size), src: sr, hdr: make([]byte, 2, ws.MaxHeaderSize-2), buf: make([]byte, 512)}
}

// closeError is a close frame from the server.
type closeError struct {
	code   ws.StatusCode
	reason string
}

func (e *closeError) Error() string {
	return "websocket closed by server: " + strconv.Itoa(int(e.code)) + " " + e.reason
}

// each reads frames until the connection fails or closes, passing every
// complete text message to onText (valid only during the call) and
// answering pings and closes with write.
func (fr *frameReader) each(write func(ws.Frame) error, onText func([]byte)) error {
	return fr.until(write, func(b []byte) bool { onText(b); return false })
}

// until is each, but stops (with a nil error) after the first text
// message for which onText returns true.
func (fr *frameReader) until(write func(ws.Frame) error, onText func([]byte) (done bool)) error {
	for {
		h, err := ws.ReadHeaderBuffer(fr.r, fr.hdr)
		if err != nil {
			return err
		}
		if h.Length > maxFrame {
			return fmt.Errorf("websocket frame of %d bytes is over %d", h.Length, maxFrame)
		}
		n := int(h.Length)
		if cap(fr.buf) < n {
			fr.buf = make([]byte, n)
		}
		p := fr.buf[:n]
		if _, err := io.ReadFull(fr.r, p); err != nil {
			return err
		}
		if h.Masked { // servers do not mask, but be lenient
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpText, ws.OpBinary:
			if !h.Fin {
				fr.frag = append(fr.frag[:0], p...)
			} else if onText(p) {
				return nil
			}
		case ws.OpContinuation:
			fr.frag = append(fr.frag, p...)
			if h.Fin {
				done := onText(fr.frag)
				fr.frag = fr.frag[:0]
				if done {
					return nil
				}
			}
		case ws.OpPing:
			if err := write(ws.NewPongFrame(p)); err != nil {
				return fmt.Errorf("websocket pong: %w", err)
			}
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(p)
			if code.Empty() {
				code = ws.StatusNoStatusRcvd
			}
			_ = write(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
			return &closeError{code: code, reason: reason}
		}
	}
}

// wsSub is a WebSocket subscriber of the fast client.
type wsSub struct {
	conn    net.Conn
	mu      sync.Mutex // serializes writes: pongs and the close
	r       *frameReader
	id      int
	framing string      // -ws-framing, which the node selected
	pm      api.Message // the last proto message decoded (framingProto)
}

func subUser(i int) string { return "bench-s" + strconv.Itoa(i) }

// dialWSClient opens WebSocket subscriber i with the -ws-client asked for.
func dialWSClient(ctx context.Context, cfg *config, i int, bufSize int) (subConn, error) {
	if cfg.wsClient == wsClientStd {
		s, err := dialStdSub(ctx, cfg, i)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	s, err := dialWSSub(ctx, cfg, i, bufSize)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func dialWSSub(ctx context.Context, cfg *config, i int, bufSize int) (*wsSub, error) {
	offered := cfg.subprotocol()
	conn, br, selected, err := dialWS(ctx, cfg.subAddr(i), cfg.token, offered)
	if err != nil {
		return nil, fmt.Errorf("subscriber %d: %w", i, err)
	}
	if err := checkSubprotocol(offered, selected); err != nil {
		conn.Close()
		return nil, fmt.Errorf("subscriber %d: %w", i, err)
	}
	s := &wsSub{conn: conn, r: newFrameReader(conn, br, bufSize), id: i, framing: cfg.wsFraming}
	room, join := subJoin(cfg, i)
	if err := s.write(joinFrame(subUser(i), room, join)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("subscriber %d: join: %w", i, err)
	}
	if err := s.awaitLive(ctx, cfg.roomsPerConn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("subscriber %d: %w", i, err)
	}
	return s, nil
}

// each calls fn with each message of frame b: b itself in the JSON
// framing, its parts in the packed ones.
func (s *wsSub) each(b []byte, fn func(msg []byte)) error {
	switch s.framing {
	case framingNDJSON:
		return splitNDJSON(b, fn)
	case framingProto:
		return splitVarint(b, fn)
	}
	fn(b)
	return nil
}

// awaitLive reads until every one of the stream's k rooms sent its
// KIND_LIVE (k > 1: the stream asked for events), so that the run starts
// with each connection in all its rooms; a one-room stream without events
// gets none, and is live once its join is read. An error frame (a
// refused subscription) fails it. ctx bounds the wait. A packed frame is
// read to its end: what follows the last KIND_LIVE in it (events: no
// benchmark message is sent before every subscriber is live) is dropped.
func (s *wsSub) awaitLive(ctx context.Context, k int) error {
	if k <= 1 {
		return nil
	}
	stop := context.AfterFunc(ctx, func() { _ = s.conn.SetReadDeadline(time.Now()) })
	defer stop()
	live := 0
	var errFrame error
	err := s.r.until(s.write, func(b []byte) bool {
		if err := s.each(b, func(msg []byte) {
			if errFrame != nil {
				return
			}
			if s.framing == framingProto {
				if err := proto.Unmarshal(msg, &s.pm); err != nil {
					errFrame = fmt.Errorf("bad frame while subscribing: %w", err)
					return
				}
				switch {
				case s.pm.GetKind() == api.Kind_KIND_LIVE:
					live++
				case s.pm.GetError() != nil:
					errFrame = fmt.Errorf("error frame while subscribing: %.200s", s.pm.GetError().GetMessage())
				}
				return
			}
			switch {
			case bytes.Contains(msg, []byte(`"KIND_LIVE"`)):
				live++
			case bytes.Contains(msg, []byte(`"error"`)):
				errFrame = fmt.Errorf("error frame while subscribing: %.200s", msg)
			}
		}); err != nil && errFrame == nil {
			errFrame = fmt.Errorf("bad frame while subscribing: %w", err)
		}
		return errFrame != nil || live >= k
	})
	if !stop() {
		return fmt.Errorf("waiting for %d rooms to be live (%d were): %w", k, live, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("waiting for %d rooms to be live (%d were): %w", k, live, err)
	}
	return errFrame
}

func (s *wsSub) write(f ws.Frame) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ws.WriteFrame(s.conn, ws.MaskFrameInPlace(f))
}

// run reads until the connection ends; the error says why. JSON messages
// are scanned for their fields (frameFields), not decoded; proto ones
// (framingProto) are decoded, into one reused message.
func (s *wsSub) run(st *subStats, p *plan) error {
	err := s.r.each(s.write, func(b []byte) {
		now := s.r.src.now
		st.frames++
		err := s.each(b, func(msg []byte) {
			st.msgs++
			if s.framing == framingProto {
				if err := proto.Unmarshal(msg, &s.pm); err != nil {
					st.foreign++
					st.fail(fmt.Errorf("subscriber %d: bad proto message: %w", s.id, err))
					return
				}
				observeDecoded(st, p, &s.pm, now, s.id)
				return
			}
			text, room, seq, ok := frameFields(msg)
			if !ok {
				st.foreign++
				if bytes.Contains(msg, []byte(`"error"`)) {
					st.fail(fmt.Errorf("subscriber %d: error frame: %.200s", s.id, msg))
				}
				return
			}
			observe(st, p, text, room, seq, now)
		})
		if err != nil {
			st.fail(fmt.Errorf("subscriber %d: %w", s.id, err))
		}
	})
	st.reads = s.r.src.reads
	return fmt.Errorf("subscriber %d (ws): %w", s.id, err)
}

// observeDecoded accounts for decoded message m, received at now (Unix
// ns), as run does for a scanned one: a message without text (an event,
// KIND_LIVE, an error) is another frame, and an error fails the
// subscriber.
func observeDecoded(st *subStats, p *plan, m *api.Message, now int64, id int) {
	if m.GetText() == "" {
		st.foreign++
		if e := m.GetError(); e != nil {
			st.fail(fmt.Errorf("subscriber %d: error frame: code %d: %.200s", id, e.GetCode(), e.GetMessage()))
		}
		return
	}
	observe(st, p, m.GetText(), m.GetRoom(), m.GetSeq(), now)
}

func (s *wsSub) close() { closeWS(s.conn, &s.mu) }
