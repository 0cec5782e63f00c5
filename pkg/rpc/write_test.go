package rpc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
)

// TestStuckClientIsCutAtWriteTimeout: a client that stops reading blocks
// the stream's Send once the HTTP/2 windows are full; its session is closed
// within about WriteTimeout (not when its queue overflows, which a quiet
// room never does), and its stream slot is free for the reconnect.
func TestStuckClientIsCutAtWriteTimeout(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	const writeTimeout = 200 * time.Millisecond
	// Windows that stay small: without them, grpc-go's window estimation
	// grows them as data arrives and buffers megabytes for a client that
	// never reads.
	cc, _ := serveWith(t, func(c *hub.Config) {
		c.WriteTimeout = writeTimeout
		c.MaxSessionsPerUser = 1
		c.MaxQueueBytes = 8 << 20 // far more than is sent: no slow-consumer close
		c.Registerer = reg
	}, nil, []grpc.DialOption{grpc.WithInitialWindowSize(64 << 10), grpc.WithInitialConnWindowSize(64 << 10)})
	c := api.NewChatClient(cc)
	stuck := open(t, c, &api.Message{User: "stuck", Join: &api.Join{Events: true}})
	_ = stuck // never read again

	pub := open(t, c, &api.Message{User: "pub", Join: &api.Join{Events: true}})
	text := strings.Repeat("x", 10<<10)
	for range 50 {
		if err := pub.Send(&api.Message{Text: text}); err != nil {
			t.Fatal(err)
		}
		m := recv(t, pub)
		for m.GetKind() == api.Kind_KIND_JOIN {
			// The stuck client's join event may arrive after pub joined:
			// the hub announces a join once the session is live.
			m = recv(t, pub)
		}
		if m.GetKind() != api.Kind_KIND_ACK {
			t.Fatalf("publisher got %v", m)
		}
	}
	start := time.Now()
	waitFor(t, "the stuck session to close", func() bool {
		return counter(t, reg, "chat_hub_disconnects_total", "write_error") == 1
	})
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stuck session closed after %v", d)
	}
	// The user's only slot is free again: the client reconnects.
	waitFor(t, "the user's slot", func() bool {
		s, err := c.Stream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer s.CloseSend()
		if err := s.Send(&api.Message{User: "stuck", Join: &api.Join{Events: true}}); err != nil {
			t.Fatal(err)
		}
		m, err := s.Recv()
		if status.Code(err) == codes.ResourceExhausted {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		_ = m
		return true
	})
}

// counter returns the value of the counter name with label value label.
func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
