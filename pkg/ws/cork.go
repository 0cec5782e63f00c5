package ws

import (
	"bufio"
	"encoding/binary"
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
type rawConn struct {
	net.Conn
	mu   sync.Mutex
	bufs net.Buffers // reused across batches
}

func (c *rawConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.Write(p)
}

// writeFrames sends the frames' WebSocket encodings in one system call (or a
// few, past the kernel's iovec limit), bounded by timeout.
func (c *rawConn) writeFrames(frames []*hub.Frame, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	bufs := c.bufs[:0]
	for _, f := range frames {
		bufs = append(bufs, f.Wire(textFrame))
	}
	c.bufs = bufs
	_ = c.Conn.SetWriteDeadline(time.Now().Add(timeout))
	w := bufs // WriteTo consumes its receiver
	_, err := w.WriteTo(c.Conn)
	_ = c.Conn.SetWriteDeadline(time.Time{})
	clear(bufs)
	if cap(bufs) > 4096 {
		c.bufs = nil // don't pin a burst's slice on an idle connection
	}
	return err
}

// textFrame encodes f's JSON as one unmasked, final WebSocket text frame
// (RFC 6455 §5.2), as a server sends it.
func textFrame(f *hub.Frame) []byte {
	p := f.JSON()
	var hdr [10]byte
	hdr[0] = 0x81 // FIN, opcode text
	n := 2
	switch l := len(p); {
	case l < 126:
		hdr[1] = byte(l)
	case l <= 0xFFFF:
		hdr[1] = 126
		binary.BigEndian.PutUint16(hdr[2:], uint16(l))
		n = 4
	default:
		hdr[1] = 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(l))
		n = 10
	}
	b := make([]byte, n+len(p))
	copy(b, hdr[:n])
	copy(b[n:], p)
	return b
}

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
	// Big enough that every control frame the library writes leaves in
	// one flush, hence one rawConn.Write.
	brw.Writer = bufio.NewWriterSize(w.conn, 4096)
	return w.conn, brw, nil
}
