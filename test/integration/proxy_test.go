package integration_test

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// stallProxy forwards TCP between the nodes and Redis and can stall the
// answers on the connections open at the time, without closing them, as
// a Redis that hangs (or a network that drops) would: go-redis's reads
// time out, and it retries on a new connection, which passes.
type stallProxy struct {
	ln     net.Listener
	target string

	mu         sync.Mutex
	stallStart time.Time // connections older than this are stalled
	stallEnd   time.Time
	wg         sync.WaitGroup
	conns      []net.Conn
}

func startStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *stallProxy) Addr() string { return p.ln.Addr().String() }

// Stall holds back, for d, every answer on the connections open now.
func (p *stallProxy) Stall(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stallStart, p.stallEnd = time.Now(), time.Now().Add(d)
}

func (p *stallProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		opened := time.Now()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(up, c)
			up.Close()
		}()
		go func() {
			defer p.wg.Done()
			defer c.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := up.Read(buf)
				if n > 0 {
					p.hold(opened)
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// hold waits while a stall covers a connection opened at opened.
func (p *stallProxy) hold(opened time.Time) {
	p.mu.Lock()
	start, end := p.stallStart, p.stallEnd
	p.mu.Unlock()
	if opened.Before(start) {
		if d := time.Until(end); d > 0 {
			time.Sleep(d)
		}
	}
}
