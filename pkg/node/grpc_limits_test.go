package node_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
)

// TestGRPCMaxStreamsPerConn: one connection holds at most
// -grpc-max-streams-per-conn streams; more wait until one ends.
func TestGRPCMaxStreamsPerConn(t *testing.T) {
	t.Parallel()
	a := start(t, "-grpc-max-streams-per-conn", "2")
	cc := grpcClient(t, a.GRPC)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	// Joined streams: the server's settings have arrived.
	first, cancelFirst := context.WithCancel(ctx)
	defer cancelFirst()
	joinLive(first, t, cc, "s1")
	joinLive(ctx, t, cc, "s2")

	third, cancelThird := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelThird()
	s, err := api.NewChatClient(cc).Stream(third)
	if err == nil {
		// Opened: it must not be served either.
		if err = s.Send(&api.Message{User: "s3", Join: &api.Join{Events: true}}); err == nil {
			_, err = s.Recv()
		}
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("third stream on the connection: %v, want it held until its deadline", err)
	}
	// A stream ending frees its place.
	cancelFirst()
	joinLive(ctx, t, cc, "s3")
}

// TestGRPCMaxHeaderBytes: metadata over -grpc-max-header-bytes is refused
// before any handler runs, and the node keeps serving.
func TestGRPCMaxHeaderBytes(t *testing.T) {
	t.Parallel()
	a := start(t)
	cc := grpcClient(t, a.GRPC)
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	big := metadata.AppendToOutgoingContext(ctx, "x-pad", strings.Repeat("a", 1<<20))
	if _, err := hc.Check(big, &healthpb.HealthCheckRequest{}); err == nil {
		t.Fatal("1 MiB of metadata accepted")
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("after the refusal: %v", err)
	}
}

// TestGRPCMaxRecvMsgSize: a message far over -max-text-bytes is refused by
// the transport, not decoded first.
func TestGRPCMaxRecvMsgSize(t *testing.T) {
	t.Parallel()
	a := start(t)
	cc := grpcClient(t, a.GRPC)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s, err := api.NewChatClient(cc).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&api.Message{User: "big", Text: strings.Repeat("x", 1<<20)}); err != nil && !errors.Is(err, context.Canceled) {
		t.Logf("send: %v", err)
	}
	for {
		if _, err = s.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "larger than max") {
		t.Fatalf("1 MiB message: %v, want ResourceExhausted from the transport", err)
	}
}
