package testutil

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"example.com/chat/pkg/node"
)

// StartNode runs a node in-process through node.Run, the function cmd/node
// runs, on loopback ports: args follow the defaults "-grpc-addr 127.0.0.1:0
// -http-addr 127.0.0.1:0 -send-rate 100000 -conn-rate-per-ip 0 -log-level
// warn" and win over them (tests open many loopback connections at once). The node drains and stops at cleanup; an error from Run fails the
// test, and the node's log is shown when the test failed.
func StartNode(tb testing.TB, args ...string) node.Addrs {
	tb.Helper()
	args = append([]string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0",
		"-send-rate", "100000", "-conn-rate-per-ip", "0", "-log-level", "warn"}, args...)
	logs := new(SyncBuffer)
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan node.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- node.Run(ctx, args, func(string) string { return "" }, logs, func(a node.Addrs) { addrs <- a })
	}()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("node: %v", err)
			}
		case <-time.After(30 * time.Second):
			tb.Errorf("node did not stop within 30s")
		}
		if tb.Failed() {
			tb.Logf("node %v log:\n%s", args, logs)
		}
	})
	select {
	case a := <-addrs:
		return a
	case err := <-done:
		tb.Fatalf("node did not start: %v", err)
	case <-time.After(15 * time.Second):
		tb.Fatal("node did not start within 15s")
	}
	return node.Addrs{}
}

// SyncBuffer is a bytes.Buffer safe for a writer and a reader: a node's
// logs, printed when a test fails.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
