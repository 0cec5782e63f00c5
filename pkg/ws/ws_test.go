package ws_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"example.com/chat/pkg/history"
	"example.com/chat/pkg/hub"
	"example.com/chat/pkg/pubsub"
	"example.com/chat/pkg/ws"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newServer(t *testing.T, mod func(*hub.Config)) string {
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
	srv := httptest.NewServer(ws.New(ws.Config{Hub: h, OriginPatterns: []string{"allowed.example"}}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.Shutdown(ctx)
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

type client struct {
	t *testing.T
	c *websocket.Conn
}

func dial(t *testing.T, url string, first string) *client {
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
	if m["text"] != "hi" || m["user"] != "web" || m["seq"] != "1" {
		t.Fatalf("got %v", m)
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

func jsonSeq(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
