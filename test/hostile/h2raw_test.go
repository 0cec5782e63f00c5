package hostile_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Raw is a raw HTTP/2 client connection to a node's gRPC listener, for
// attackers that ignore the server's SETTINGS (the grpc-go client would
// honour them). A reader goroutine answers SETTINGS and PING and records
// how each stream ended.
type h2Raw struct {
	c  net.Conn
	wm sync.Mutex
	fw *http2.Framer

	settings chan http2.Setting // the server's MaxConcurrentStreams (or none) from its first SETTINGS
	done     chan struct{}      // closed when the reader ends

	mu       sync.Mutex
	ended    map[uint32]string // stream id -> "refused", "status <n>" or "rst <code>"
	goaway   string
	readErr  error
	firstEnd time.Time
}

// dialH2 opens a raw HTTP/2 connection to p's gRPC listener and sends the
// preface and an empty SETTINGS frame. It is closed at cleanup.
func dialH2(t testing.TB, p *proc) *h2Raw {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.GRPC, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", p.GRPC, err)
	}
	h := &h2Raw{c: c, fw: http2.NewFramer(c, nil), settings: make(chan http2.Setting, 1),
		done: make(chan struct{}), ended: make(map[uint32]string)}
	t.Cleanup(func() { c.Close(); <-h.done })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fw.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	go h.read()
	return h
}

func (h *h2Raw) read() {
	defer close(h.done)
	fr := http2.NewFramer(io.Discard, h.c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 32 << 20
	first := true
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			h.mu.Lock()
			h.readErr = err
			h.mu.Unlock()
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			if first {
				first = false
				s, _ := f.Value(http2.SettingMaxConcurrentStreams)
				h.settings <- http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: s}
			}
			h.write(func() error { return h.fw.WriteSettingsAck() })
		case *http2.PingFrame:
			if !f.IsAck() {
				h.write(func() error { return h.fw.WritePing(true, f.Data) })
			}
		case *http2.RSTStreamFrame:
			what := "rst " + f.ErrCode.String()
			if f.ErrCode == http2.ErrCodeRefusedStream {
				what = "refused"
			}
			h.end(f.StreamID, what)
		case *http2.GoAwayFrame:
			h.mu.Lock()
			h.goaway = f.ErrCode.String()
			h.mu.Unlock()
		case *http2.MetaHeadersFrame:
			for _, hf := range f.RegularFields() {
				if hf.Name == "grpc-status" {
					h.end(f.StreamID, "status "+hf.Value)
				}
			}
		}
	}
}

func (h *h2Raw) end(id uint32, what string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.ended[id]; !ok {
		h.ended[id] = what
		if h.firstEnd.IsZero() {
			h.firstEnd = time.Now()
		}
	}
}

func (h *h2Raw) write(f func() error) error {
	h.wm.Lock()
	defer h.wm.Unlock()
	_ = h.c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	return f()
}

// maxStreams waits for the server's first SETTINGS and returns its
// SETTINGS_MAX_CONCURRENT_STREAMS (0: not sent, unlimited).
func (h *h2Raw) maxStreams(d time.Duration) (uint32, error) {
	select {
	case s := <-h.settings:
		return s.Val, nil
	case <-h.done:
		return 0, fmt.Errorf("connection ended before SETTINGS: %v", h.err())
	case <-time.After(d):
		return 0, fmt.Errorf("no SETTINGS within %v", d)
	}
}

func (h *h2Raw) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.readErr
}

// outcomes returns how many streams ended each way, the GOAWAY code (if
// any) and the read error (nil while the connection is up).
func (h *h2Raw) outcomes() (map[string]int, string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int)
	for _, what := range h.ended {
		out[what]++
	}
	return out, h.goaway, h.readErr
}

// openStream sends HEADERS for a chat.Chat/Stream call on stream id with
// block (from streamHeaders), split into CONTINUATION frames as needed,
// without END_STREAM: the call then waits for its first message.
func (h *h2Raw) openStream(id uint32, block []byte) error {
	return h.write(func() error {
		const chunk = 16 << 10
		for first := true; first || len(block) > 0; first = false {
			n := min(chunk, len(block))
			var err error
			if first {
				err = h.fw.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:n], EndHeaders: n == len(block)})
			} else {
				err = h.fw.WriteContinuation(id, n == len(block), block[:n])
			}
			if err != nil {
				return err
			}
			block = block[n:]
		}
		return nil
	})
}

// streamHeaders returns the HPACK block of a chat.Chat/Stream call to
// authority, with padding bytes of extra metadata (x-pad-N fields of 64
// KiB), as literals without indexing (no dynamic table state: the block
// can be sent on any stream) and without Huffman coding (cheap to build).
func streamHeaders(authority string, padding int) []byte {
	var b []byte
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/chat.Chat/Stream"},
		{":authority", authority}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		b = hpackLiteral(b, f[0], f[1])
	}
	pad := strings.Repeat("p", 64<<10)
	for n := 0; n < padding; n += len(pad) {
		b = hpackLiteral(b, fmt.Sprintf("x-pad-%d", n), pad)
	}
	return b
}

// hpackLiteral appends a "literal header field without indexing, new
// name" (RFC 7541 6.2.2) with raw strings.
func hpackLiteral(b []byte, name, value string) []byte {
	b = append(b, 0)
	b = hpackString(b, name)
	return hpackString(b, value)
}

func hpackString(b []byte, s string) []byte {
	// Integer with a 7-bit prefix, H bit 0 (RFC 7541 5.1).
	n := uint64(len(s))
	if n < 127 {
		b = append(b, byte(n))
	} else {
		b = append(b, 127)
		n -= 127
		for n >= 128 {
			b = append(b, byte(n&0x7f|0x80))
			n >>= 7
		}
		b = append(b, byte(n))
	}
	return append(b, s...)
}
