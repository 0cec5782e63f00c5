package ws_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"example.com/chat/pkg/hub"
)

// gauge returns the value of the gauge or counter name in reg (0 if absent).
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var v float64
		for _, m := range mf.GetMetric() {
			v += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
		return v
	}
	return 0
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling, not synchronisation
	}
}

// TestJoinTimeout: a connection that never sends its first message is
// closed at the join deadline, with a close that says why.
func TestJoinTimeout(t *testing.T) {
	t.Parallel()
	url := newServer(t, func(c *hub.Config) { c.JoinTimeout = 100 * time.Millisecond })
	start := time.Now()
	c := dial(t, url, "")
	ce := c.closed()
	if ce.Code != websocket.StatusPolicyViolation || ce.Reason != "join timeout: send the first message within 100ms" {
		t.Fatalf("closed with %d %q", ce.Code, ce.Reason)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v", d)
	}
	// A client that joins in time stays past the deadline.
	ok := dial(t, url, `{"user":"quick","join":{"events":true}}`)
	ok.nextKind("KIND_LIVE")
	time.Sleep(200 * time.Millisecond) // past the join deadline, on purpose
	ok.send(`{"text":"still here"}`)
	ok.nextKind("KIND_ACK")
}

// TestNeverJoinedConnectionsAreCounted: a connection that has not joined
// holds one of the node's MaxSessions slots, so a full node answers 503
// before upgrading; the slot is freed when that connection goes, and a
// drain closes it.
func TestNeverJoinedConnectionsAreCounted(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	url, h := newNode(t, func(c *hub.Config) { c.MaxSessions = 1; c.Registerer = reg })
	idle := dial(t, url, "")
	waitFor(t, "the idle connection's admission", func() bool { return gauge(t, reg, "chat_hub_pending_connections") == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("full node: err=%v resp=%v", err, resp)
	}
	if gauge(t, reg, "chat_hub_connections_refused_total") != 1 {
		t.Fatal("refusal not counted")
	}

	// The idle client goes: its slot is free for the next.
	idle.c.CloseNow()
	waitFor(t, "the slot to be freed", func() bool { return gauge(t, reg, "chat_hub_pending_connections") == 0 })
	next := dial(t, url, "")

	// A drain closes a connection that has not joined.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := h.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if ce := next.closed(); ce.Code != websocket.StatusServiceRestart {
		t.Fatalf("drain closed with %d %q", ce.Code, ce.Reason)
	}
	// A draining node upgrades no one.
	_, resp, err = websocket.Dial(ctx, url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(readBody(t, resp), "shutting down") {
		t.Fatalf("draining node: err=%v resp=%v", err, resp)
	}
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
