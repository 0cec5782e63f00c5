package browser_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"example.com/chat/api"
)

// freezeProxy relays TCP connections to target. freeze stops relaying on
// the connections open at that moment, without closing them, as a frozen
// (SIGSTOPped) node behaves: the kernel keeps the sockets, nothing
// answers. New connections are relayed as usual; thaw delivers what the
// frozen ones held, as a node that wakes up reads its sockets.
type freezeProxy struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	cond     *sync.Cond
	frozen   bool
	frozenTo int // connections numbered below it are frozen
	next     int
	conns    []net.Conn
	wg       sync.WaitGroup
}

func startProxy(t *testing.T, target string) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *freezeProxy) addr() string { return p.ln.Addr().String() }

func (p *freezeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		d, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		id := p.next
		p.next++
		p.conns = append(p.conns, c, d)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(id, d, c)
		go p.pipe(id, c, d)
	}
}

// pipe copies src to dst, holding each chunk while connection id is
// frozen.
func (p *freezeProxy) pipe(id int, dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.frozen && id < p.frozenTo {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *freezeProxy) freeze() {
	p.mu.Lock()
	p.frozen, p.frozenTo = true, p.next
	p.mu.Unlock()
}

func (p *freezeProxy) thaw() {
	p.mu.Lock()
	p.frozen = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *freezeProxy) close() {
	p.ln.Close()
	p.thaw()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestPageFrozenNode: the page's connection goes silent (a frozen node, or
// a black hole on the way: here a proxy stops relaying, sockets open). The
// page's watchdog sees no frame for its heartbeat timeout (2 s, for a node
// with -heartbeat 1s), gives the connection up, reconnects and resumes;
// a message typed during the freeze is sent again with its client id
// and stored once, even after the frozen connection delivers its copy.
func TestPageFrozenNode(t *testing.T) {
	chromePath(t)
	n := startNode(t, "127.0.0.1:0", "-heartbeat", "1s")
	px := startProxy(t, n.HTTP)
	ctx := newBrowser(t)

	do(t, ctx, "load and join",
		chromedp.Navigate("http://"+px.addr()+"/?heartbeatTimeout=2000"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="name-input"]`)),
		chromedp.Clear(chromedp.CSS(`[data-testid="name-input"]`)),
		typeInto(chromedp.CSS(`[data-testid="name-input"]`), "gina"),
		chromedp.Clear(chromedp.CSS(`[data-testid="room-input"]`)),
		typeInto(chromedp.CSS(`[data-testid="room-input"]`), "ice"),
		chromedp.Click(chromedp.CSS(`[data-testid="join-button"]`)),
	)
	poll(t, ctx, "status live", `document.querySelector('[data-testid="status"]').dataset.state === "live"`)
	hal := joinGRPC(t, n.GRPC, "hal", "ice", true)
	hal.send(&api.Message{Text: "before freeze"})
	poll(t, ctx, "message before freeze", `[...document.querySelectorAll('[data-testid="message-list"] [data-user="hal"]')]
		.some(e => e.querySelector(".text").textContent === "before freeze")`)

	record(t, ctx, "status")
	px.freeze()
	frozen := time.Now()
	do(t, ctx, "send during the freeze",
		typeInto(chromedp.CSS(`[data-testid="message-input"]`), "typed while frozen"),
		chromedp.Click(chromedp.CSS(`[data-testid="send-button"]`)),
	)
	poll(t, ctx, "reconnecting after the silence",
		`window.__seen["status"].some(s => s.state === "reconnecting" && s.text.includes("no heartbeat"))`)
	poll(t, ctx, "live again", `document.querySelector('[data-testid="status"]').dataset.state === "live"`)
	// The watchdog (2 s), the backoff after a live connection (up to
	// 500 ms), and a second of slack for a loaded machine.
	if took := time.Since(frozen); took > 4*time.Second {
		t.Errorf("the page took %v to be live again after the freeze; want under 4 s", took)
	} else {
		t.Logf("live again %v after the freeze", took)
	}
	hal.waitFor("the message typed during the freeze", func(m *api.Message) bool {
		return m.GetKind() == api.Kind_KIND_MESSAGE && m.GetUser() == "gina" && m.GetText() == "typed while frozen"
	})
	poll(t, ctx, "the message confirmed", `(() => {
		const e = [...document.querySelectorAll('[data-testid="message-list"] [data-user="gina"]')]
			.find(e => e.querySelector(".text").textContent === "typed while frozen");
		return !!e && !e.classList.contains("pending") && !!e.dataset.seq;
	})()`)

	// The frozen connection now delivers its copy of the send, with the
	// same client id: not stored again.
	px.thaw()
	hal.send(&api.Message{Text: "after thaw"})
	poll(t, ctx, "message after thaw", `[...document.querySelectorAll('[data-testid="message-list"] [data-user="hal"]')]
		.some(e => e.querySelector(".text").textContent === "after thaw")`)
	for text, want := range map[string]int{"before freeze": 1, "after thaw": 1, "typed while frozen": 1} {
		if c := mustEval[int](t, ctx, `[...document.querySelectorAll('[data-testid="message-list"] .msg')]
			.filter(e => e.querySelector(".text").textContent === `+jsString(text)+`).length`); c != want {
			t.Errorf("%q shown %d times, want %d", text, c, want)
		}
	}
	// Stored once. The thawed connection's copy may be handled after
	// "after thaw": wait for the node to have read it (its session ends
	// once the page's close frame behind it arrives).
	stored := func() (int, error) {
		cc, err := grpc.NewClient(n.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return 0, err
		}
		defer cc.Close()
		hctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := api.NewChatClient(cc).History(hctx, &api.HistoryRequest{Room: "ice"})
		if err != nil {
			return 0, err
		}
		c := 0
		for _, m := range res.GetMessages() {
			if m.GetText() == "typed while frozen" {
				c++
			}
		}
		return c, nil
	}
	time.Sleep(500 * time.Millisecond) // a duplicate, if any, has no event to wait for
	if c, err := stored(); err != nil || c != 1 {
		t.Errorf("history holds %q %d times (%v); want once", "typed while frozen", c, err)
	}
}
