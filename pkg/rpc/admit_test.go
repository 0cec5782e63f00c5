package rpc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
)

// gauge returns the summed value of the gauge or counter name in reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return v
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

// TestJoinTimeout: a stream that sends no first message is ended at the
// join deadline with DeadlineExceeded and a message that says why.
func TestJoinTimeout(t *testing.T) {
	t.Parallel()
	c := newServer(t, func(c *hub.Config) { c.JoinTimeout = 100 * time.Millisecond })
	s, err := c.Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	err = recvErr(t, s)
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(status.Convert(err).Message(), "join timeout: send the first message within 100ms") {
		t.Fatalf("got %v", err)
	}
	// A client that joins in time stays past the deadline.
	ok := open(t, c, &api.Message{User: "quick", Join: &api.Join{Events: true}})
	time.Sleep(200 * time.Millisecond) // past the join deadline, on purpose
	if err := ok.Send(&api.Message{Text: "still here"}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ok); m.GetKind() != api.Kind_KIND_ACK {
		t.Fatalf("got %v", m)
	}
}

// TestNeverJoinedStreamsAreCounted: a stream that has not joined holds one
// of the node's MaxSessions slots (a full node refuses the next with
// ResourceExhausted), frees it when it goes, and is ended by a drain.
func TestNeverJoinedStreamsAreCounted(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	cc, h := serve(t, func(c *hub.Config) { c.MaxSessions = 1; c.Registerer = reg })
	c := api.NewChatClient(cc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	idle, err := c.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the idle stream's admission", func() bool { return gauge(t, reg, "chat_hub_pending_connections") == 1 })

	full, err := c.Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := recvErr(t, full); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "full") {
		t.Fatalf("full node: %v", err)
	}

	// The idle client goes: its slot is free for the next.
	cancel()
	if err := recvErr(t, idle); status.Code(err) != codes.Canceled {
		t.Fatalf("idle stream: %v", err)
	}
	waitFor(t, "the slot to be freed", func() bool { return gauge(t, reg, "chat_hub_pending_connections") == 0 })
	next, err := c.Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the next stream's admission", func() bool { return gauge(t, reg, "chat_hub_pending_connections") == 1 })

	// A drain ends a stream that has not joined, and admits no other.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := h.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := recvErr(t, next); status.Code(err) != codes.Unavailable {
		t.Fatalf("drain: %v", err)
	}
	late, err := c.Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := recvErr(t, late); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("draining node: %v", err)
	}
}
