package ws_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"example.com/chat/pkg/hub"
)

// TestInvalidFrameBudget: a connection may send MaxInvalidFrames frames
// that are malformed or refused as invalid; the last of them closes it
// (1008), before or after the join. Each is answered until then, and the
// connection keeps working. Rate-limited sends are not invalid: they have
// their own limit.
func TestInvalidFrameBudget(t *testing.T) {
	t.Parallel()
	url := newServer(t, func(c *hub.Config) { c.MaxInvalidFrames = 4; c.MaxTextBytes = 100 })
	invalid := []string{
		`not json`,
		`{"text":5}`,
		`{"kind":"KIND_ACK","text":"x"}`,
		`{"text":""}`,
		`{"text":"` + strings.Repeat("x", 101) + `"}`,
		`{"text":"x","clientId":"` + strings.Repeat("c", 129) + `"}`,
	}
	for _, tc := range []struct {
		name, first string
		frames      []string
	}{
		{"after join", `{"user":"a","room":"budget-1","join":{"events":true}}`, invalid[:4]},
		{"after join, refused texts", `{"user":"a","room":"budget-2","join":{"events":true}}`, invalid[2:]},
		{"seed client", `{"user":"a","room":"budget-3"}`, invalid[1:5]},
		{"before join", "", []string{`not json`, `{"text":5}`, `[]`, `{"user":1}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dial(t, url, tc.first)
			if strings.Contains(tc.first, "events") {
				c.nextKind("KIND_LIVE")
			}
			for i, f := range tc.frames {
				c.send(f)
				c.nextKind("error")
				if i == len(tc.frames)-2 && tc.first != "" {
					// One short of the budget: still working.
					c.send(`{"text":"fine","clientId":"ok"}`)
					if strings.Contains(tc.first, "events") {
						if m := c.nextKind("KIND_ACK"); m["clientId"] != "ok" {
							t.Fatalf("got %v", m)
						}
					}
				}
			}
			ce := c.closed()
			if ce.Code != websocket.StatusPolicyViolation || ce.Reason != "too many invalid frames" {
				t.Fatalf("closed with %d %q", ce.Code, ce.Reason)
			}
		})
	}
	t.Run("rate limited sends are not counted", func(t *testing.T) {
		t.Parallel()
		url := newServer(t, func(c *hub.Config) { c.MaxInvalidFrames = 2; c.SendRate = 0.001; c.SendBurst = 1 })
		c := dial(t, url, `{"user":"a","join":{"events":true}}`)
		c.nextKind("KIND_LIVE")
		c.send(`{"text":"first"}`)
		c.nextKind("KIND_ACK")
		for range 5 {
			c.send(`{"text":"again"}`)
			if e := c.nextKind("error")["error"].(map[string]any); e["code"] != float64(8) {
				t.Fatalf("got %v", e)
			}
		}
		c.send(`not json`)
		c.nextKind("error")
		c.send(`not json`)
		c.nextKind("error")
		if ce := c.closed(); ce.Code != websocket.StatusPolicyViolation || ce.Reason != "too many invalid frames" {
			t.Fatalf("closed with %d %q", ce.Code, ce.Reason)
		}
	})
	t.Run("oversize before join", func(t *testing.T) {
		t.Parallel()
		// Closed at once: the client may not even finish its write (the
		// server resets the rest), and sees 1009 if it reads in time.
		c := dial(t, url, "")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.c.Write(ctx, websocket.MessageText, []byte(`{"user":"a","text":"`+strings.Repeat("x", 1<<20)+`"}`))
		for {
			_, _, err := c.c.Read(ctx)
			if err == nil {
				continue
			}
			if ctx.Err() != nil {
				t.Fatal("an oversize frame did not close the connection")
			}
			if code := websocket.CloseStatus(err); code != -1 && code != websocket.StatusMessageTooBig {
				t.Fatalf("closed with %v", err)
			}
			break
		}
	})
}
