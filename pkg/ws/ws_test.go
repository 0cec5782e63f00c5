package ws_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"example.com/chat/pkg/history"
	"example.com/chat/pkg/hub"
	"example.com/chat/pkg/pubsub"
	"example.com/chat/pkg/ws"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newServer(t testing.TB, mod func(*hub.Config), wsMods ...func(*ws.Config)) string {
	t.Helper()
	url, _ := newNode(t, mod, wsMods...)
	return url
}

// newNode is newServer that also returns the hub.
func newNode(t testing.TB, mod func(*hub.Config), wsMods ...func(*ws.Config)) (string, *hub.Hub) {
	t.Helper()
	log := history.NewMemory(history.MemoryConfig{})
	cfg := hub.Config{Broker: pubsub.NewMemory(log), History: log, SendRate: 1e6}
	if mod != nil {
		mod(&cfg)
	}
	h, err := hub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	wc := ws.Config{Hub: h, OriginPatterns: []string{"allowed.example"}}
	for _, m := range wsMods {
		m(&wc)
	}
	srv := httptest.NewServer(ws.New(wc))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.Shutdown(ctx)
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http"), h
}

type client struct {
	t testing.TB
	c *websocket.Conn
}

func dial(t testing.TB, url string, first string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	cl := &client{t: t, c: c}
	if first != "" {
		cl.send(first)
	}
	return cl
}

func (c *client) send(s string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// next reads one frame and checks it is a JSON object.
func (c *client) next() map[string]any {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, data, err := c.c.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		c.t.Fatalf("frame type %v", typ)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		c.t.Fatalf("frame is not JSON: %q", data)
	}
	return m
}

func (c *client) nextKind(kind string) map[string]any {
	c.t.Helper()
	for {
		m := c.next()
		k, _ := m["kind"].(string)
		if k == "" {
			k = "KIND_MESSAGE"
		}
		if _, isErr := m["error"]; isErr && kind != "error" {
			c.t.Fatalf("unexpected error frame %v", m)
		}
		if k == kind || (kind == "error" && m["error"] != nil) {
			return m
		}
	}
}

// closed waits for the server to close and returns the close status.
func (c *client) closed() websocket.CloseError {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		_, _, err := c.c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("want a close frame, got %v", err)
		}
		return ce
	}
}

func TestSeedSnippetFrameBothWays(t *testing.T) {
	t.Parallel()
	url := newServer(t, nil)
	listener := dial(t, url, `{"user":"listener","join":{"events":true}}`)
	listener.nextKind("KIND_LIVE")
	// Exactly what the seed snippet sends first: user, text, ts (a number).
	web := dial(t, url, `{"user":"web","text":"hi","ts":1700000000000}`)
	m := listener.nextKind("KIND_MESSAGE")
	// ts and seq are JSON numbers (BrowserJSON): a browser's new Date(m.ts)
	// works.
	if m["text"] != "hi" || m["user"] != "web" || m["seq"] != float64(1) {
		t.Fatalf("got %v", m)
	}
	if ts, ok := m["ts"].(float64); !ok || ts < 1e12 {
		t.Fatalf("ts = %#v, want a number of milliseconds", m["ts"])
	}
	listener.send(`{"text":"back at you"}`)
	if m := web.next(); m["text"] != "back at you" || m["user"] != "listener" {
		t.Fatalf("seed client got %v", m)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	url := newServer(t, func(c *hub.Config) { c.MaxTextBytes = 100 })
	watcher := dial(t, url, `{"user":"watcher","join":{"events":true}}`)
	watcher.nextKind("KIND_LIVE")

	t.Run("not json", func(t *testing.T) {
		c := dial(t, url, `{"user":"a"}`)
		c.send(`not json`)
		m := c.next()
		e, _ := m["error"].(map[string]any)
		if e == nil || e["code"] != float64(3) || !strings.Contains(e["message"].(string), "not a valid chat.Message") {
			t.Fatalf("got %v", m)
		}
		// The connection still works.
		c.send(`{"text":"still here"}`)
		if m := watcher.nextKind("KIND_MESSAGE"); m["text"] != "still here" {
			t.Fatalf("watcher got %v", m)
		}
	})
	t.Run("wrong field type", func(t *testing.T) {
		// A room of its own: in "general" the join may replay the
		// message the previous subtest sent before the error frame.
		c := dial(t, url, `{"user":"a","room":"wrong-type"}`)
		c.send(`{"text": 5}`)
		if m := c.next(); m["error"] == nil {
			t.Fatalf("got %v", m)
		}
	})
	t.Run("binary frame", func(t *testing.T) {
		c := dial(t, url, "")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.c.Write(ctx, websocket.MessageBinary, []byte{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		if ce := c.closed(); ce.Code != websocket.StatusUnsupportedData {
			t.Fatalf("closed with %v", ce)
		}
	})
	t.Run("frame over read limit", func(t *testing.T) {
		c := dial(t, url, `{"user":"a"}`)
		c.send(`{"text":"` + strings.Repeat("x", 1<<20) + `"}`)
		if ce := c.closed(); ce.Code != websocket.StatusMessageTooBig {
			t.Fatalf("closed with %v", ce)
		}
	})
	t.Run("text over limit", func(t *testing.T) {
		c := dial(t, url, `{"user":"a","join":{"events":true}}`)
		c.nextKind("KIND_LIVE")
		c.send(`{"text":"` + strings.Repeat("x", 101) + `","clientId":"big"}`)
		m := c.nextKind("error")
		e := m["error"].(map[string]any)
		if e["code"] != float64(8) || !strings.Contains(e["message"].(string), "limit of 100 bytes") || m["clientId"] != "big" {
			t.Fatalf("got %v", m)
		}
	})
	for _, tc := range []struct{ name, first, want string }{
		{"empty user", `{"text":"x"}`, "user name is empty"},
		{"long user", `{"user":"` + strings.Repeat("u", 65) + `"}`, "longer than 64"},
		{"control user", `{"user":"a\u0000b"}`, "control character"},
		{"bad room", `{"user":"a","room":"x y"}`, "room name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, url, tc.first)
			m := c.next()
			e, _ := m["error"].(map[string]any)
			if e == nil || e["code"] != float64(3) || !strings.Contains(e["message"].(string), tc.want) {
				t.Fatalf("got %v", m)
			}
			if ce := c.closed(); ce.Code != websocket.StatusPolicyViolation {
				t.Fatalf("closed with %v", ce)
			}
		})
	}
	// Nothing invalid was delivered to the watcher: its next message is
	// the valid one sent now.
	ok := dial(t, url, `{"user":"ok"}`)
	ok.send(`{"text":"valid"}`)
	for {
		m := watcher.next()
		if m["kind"] == "KIND_JOIN" || m["kind"] == "KIND_LEAVE" {
			continue
		}
		if m["text"] != "valid" {
			t.Fatalf("watcher got %v", m)
		}
		break
	}
}

func TestForeignOriginRefused(t *testing.T) {
	t.Parallel()
	url := newServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := http.Header{"Origin": []string{"https://evil.example"}}
	_, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: err=%v resp=%v", err, resp)
	}
	h.Set("Origin", "https://allowed.example")
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatalf("listed origin refused: %v", err)
	}
	c.CloseNow()
}

func TestSlowWebSocketConsumer(t *testing.T) {
	t.Parallel()
	url := newServer(t, func(c *hub.Config) { c.MaxQueueBytes = 64 << 10 })
	slow := dial(t, url, `{"user":"slow"}`) // never reads
	_ = slow
	fast := dial(t, url, `{"user":"fast"}`)
	pub := dial(t, url, `{"user":"pub","join":{"events":true}}`)
	pub.nextKind("KIND_LIVE")
	text := strings.Repeat("y", 2000)
	for i := range 2000 {
		pub.send(`{"text":"` + text + `"}`)
		pub.nextKind("KIND_ACK")
		if m := fast.next(); m["seq"] != jsonSeq(i+1) {
			t.Fatalf("fast got seq %v want %d", m["seq"], i+1)
		}
	}
	// The slow client was cut off; its socket is closed.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, _, err := slow.c.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatal("slow client still connected")
			}
			return
		}
	}
}

// jsonSeq is seq i as it decodes from a frame: a JSON number.
func jsonSeq(i int) any { return float64(i) }

func TestPingsCloseDeadPeers(t *testing.T) {
	t.Parallel()
	// Long enough that the live peer's pong, on a loaded machine, comes
	// back within an interval; the dead one is dropped within two.
	reg := prometheus.NewRegistry()
	url, _ := newNode(t, func(c *hub.Config) { c.Registerer = reg }, func(c *ws.Config) { c.PingInterval = 250 * time.Millisecond })
	// A peer that keeps reading answers the pings and stays; one that
	// stops reading (a dead peer) never sends its pong and is dropped.
	live := dial(t, url, `{"user":"live","join":{"events":true}}`)
	live.nextKind("KIND_LIVE")
	frames := make(chan map[string]any, 100)
	go func() {
		defer close(frames)
		for {
			_, data, err := live.c.Read(context.Background())
			if err != nil {
				return
			}
			var m map[string]any
			if json.Unmarshal(data, &m) == nil {
				frames <- m
			}
		}
	}()
	dead := dial(t, url, `{"user":"dead"}`)
	// Reading only once the server gave up on it: a read would answer
	// the pings.
	waitFor(t, "the dead peer to be dropped", func() bool { return gauge(t, reg, "chat_hub_disconnects_total") >= 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		_, _, err := dead.c.Read(ctx)
		if err == nil {
			continue // frames sent before the server gave up
		}
		if ctx.Err() != nil {
			t.Fatal("the server kept a peer that answers no ping")
		}
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			t.Fatalf("want the connection dropped, got a close frame %v", ce)
		}
		break
	}
	live.send(`{"text":"still here","clientId":"c1"}`)
	for m := range frames {
		if m["kind"] == "KIND_ACK" && m["clientId"] == "c1" {
			live.c.CloseNow()
			for range frames {
			}
			return
		}
	}
	t.Fatal("the live peer was dropped")
}

// maskedText encodes p as a client's masked, final text frame.
func maskedText(p []byte) []byte {
	key := [4]byte{1, 2, 3, 4}
	b := []byte{0x81}
	switch l := len(p); {
	case l < 126:
		b = append(b, 0x80|byte(l))
	default:
		b = append(b, 0x80|126, byte(l>>8), byte(l))
	}
	b = append(b, key[:]...)
	for i, c := range p {
		b = append(b, c^key[i%4])
	}
	return b
}

func TestFrameSentWithTheUpgradeRequest(t *testing.T) {
	t.Parallel()
	url := newServer(t, nil)
	// A client may send its first frame right behind the upgrade request,
	// in the same segment: the server must read it before anything else.
	nc, err := net.Dial("tcp", strings.TrimPrefix(url, "ws://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	first := maskedText([]byte(`{"user":"early","join":{"events":true}}`))
	if _, err := nc.Write(append([]byte(req), first...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %s", resp.Status)
	}
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		t.Fatal(err)
	}
	if hdr[0] != 0x81 || hdr[1] >= 126 {
		t.Fatalf("want a short text frame, got header % x", hdr)
	}
	payload := make([]byte, hdr[1])
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil || m["kind"] != "KIND_LIVE" {
		t.Fatalf("want KIND_LIVE, got %q (%v)", payload, err)
	}
}
