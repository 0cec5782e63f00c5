package ws

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"

	"example.com/chat/pkg/hub"
)

// rawConn is the hijacked connection under a coder/websocket Conn. Data
// frames bypass the library: the session writer sends a whole batch of
// pre-encoded frames (shared by every recipient) with one writev. The
// library still handles the handshake, reads, pings, pongs and close
// frames; its writes reach the socket through rawConn.Write one complete
// frame at a time (it flushes its buffer per frame), and mu keeps them from
// interleaving with a batch.
//
// A batch's write deadline is set at most once per half write timeout,
// not twice per batch (set, then cleared): a busy connection pays the
// runtime's timer update once in a while instead of per delivery, and a
// batch still has between half the timeout and all of it. The library's
// writes bound themselves (by their context), so Write clears a deadline a
// batch left behind before it writes.
type rawConn struct {
	net.Conn
	mu       sync.Mutex
	bufs     net.Buffers // reused across batches
	scratch  []byte      // packed frames' headers and prefixes, reused while small
	deadline time.Time   // the write deadline batches left set; zero: none
}

func (c *rawConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.deadline.IsZero() {
		_ = c.Conn.SetWriteDeadline(time.Time{})
		c.deadline = time.Time{}
	}
	return c.Conn.Write(p)
}

// armDeadline makes sure the write that follows has at least half of
// timeout before the connection's write deadline, and at most timeout.
// c.mu must be held.
func (c *rawConn) armDeadline(timeout time.Duration) {
	now := time.Now()
	if c.deadline.Sub(now) >= timeout/2 {
		return
	}
	c.deadline = now.Add(timeout)
	_ = c.Conn.SetWriteDeadline(c.deadline)
}

// writeFrames sends the frames' WebSocket encodings in mode m (one frame
// each, or packed) in one system call (or a few, past the kernel's iovec
// limit), bounded by timeout (see armDeadline: at least half of it).
func (c *rawConn) writeFrames(frames []*hub.Frame, m mode, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	bufs := c.bufs[:0]
	if m == modeSingle {
		for _, f := range frames {
			bufs = append(bufs, f.Wire(textFrame))
		}
	} else {
		if need := packedScratch(len(frames)); cap(c.scratch) < need {
			c.scratch = make([]byte, 0, need)
		}
		bufs, _ = appendPacked(bufs, c.scratch[:0], frames, m)
	}
	c.bufs = bufs
	c.armDeadline(timeout)
	w := bufs // WriteTo consumes its receiver
	_, err := w.WriteTo(c.Conn)
	clear(bufs)
	if cap(bufs) > 4096 {
		c.bufs = nil // don't pin a burst's slice on an idle connection
	}
	if cap(c.scratch) > maxIdleScratch {
		c.scratch = nil
	}
	return err
}

// maxIdleScratch is the largest scratch a connection keeps between
// batches: enough for a dozen messages, so that a quiet connection packs
// without allocating, and little for an idle one to hold.
const maxIdleScratch = 256

// textFrame encodes f's JSON, with browser numbers (BrowserJSON), as one
// unmasked, final WebSocket text frame (RFC 6455 §5.2), as a server sends
// it.
func textFrame(f *hub.Frame) []byte {
	p := BrowserJSON(f.JSON())
	b := appendHeader(make([]byte, 0, 10+len(p)), opText, len(p))
	return append(b, p...)
}

// controlFrameBuffer is the library's write buffer: a control frame's
// largest encoding (a 14-byte header, masked as a client would, plus 125
// bytes of payload) fits.
const controlFrameBuffer = 256

// readBuffer is the connection's read buffer.
const readBuffer = 512

// corkWriter hands coder/websocket a hijacked connection wrapped in a
// rawConn.
type corkWriter struct {
	http.ResponseWriter
	conn *rawConn
}

func (w *corkWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		nc.Close()
		return nil, nil, err
	}
	w.conn = &rawConn{Conn: nc}
	// The library reads through brw.Reader for the connection's life;
	// net/http's is 4 KiB. Clients send little (small JSON frames, and a
	// payload bigger than the buffer is read around it), so a small one
	// serves, and every idle connection keeps it. Only when the client
	// has sent nothing early: the library keeps what is buffered but
	// replaces the reader's source, so early bytes must stay in
	// net/http's buffer.
	if brw.Reader.Buffered() == 0 {
		brw.Reader = bufio.NewReaderSize(nc, readBuffer)
	}
	// Big enough that every frame the library writes leaves in one flush,
	// hence one rawConn.Write, never split around a batch: after the join
	// those are control frames only (at most 2+125 bytes); the error
	// frames written before it, when no batch can run, may be split.
	// Small, because every idle connection keeps it.
	brw.Writer = bufio.NewWriterSize(w.conn, controlFrameBuffer)
	return w.conn, brw, nil
}
