package ws

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
)

// corkConn lets the session writer gather several WebSocket frames and send
// them with one write system call. coder/websocket flushes after every
// message; while corked, those flushes land in buf, and uncork writes buf at
// once. Uncorked, writes pass straight through (pongs and close frames from
// the library's own goroutines are never held back for long: the writer
// uncorks at the end of every batch).
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.corked {
		c.buf = append(c.buf, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncork writes everything gathered since cork, bounded by timeout.
func (c *corkConn) uncork(timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if len(c.buf) == 0 {
		return nil
	}
	// Holding mu across the write keeps frame bytes in order with any
	// control frame another goroutine writes meanwhile.
	_ = c.Conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.Conn.Write(c.buf)
	_ = c.Conn.SetWriteDeadline(time.Time{})
	if cap(c.buf) > 64<<10 {
		c.buf = nil // don't pin a burst's buffer on an idle connection
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// corkWriter hands coder/websocket a hijacked connection wrapped in a
// corkConn.
type corkWriter struct {
	http.ResponseWriter
	conn *corkConn
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
	w.conn = &corkConn{Conn: nc}
	// A larger buffer than net/http's 4 KiB keeps a big message in one
	// flush.
	brw.Writer = bufio.NewWriterSize(w.conn, 16<<10)
	return w.conn, brw, nil
}
