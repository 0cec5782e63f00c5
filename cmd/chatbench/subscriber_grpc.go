package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"example.com/chat/api"
)

// newGRPCConn returns a (lazily connecting) plaintext client connection to
// addr, which is used as given: no name resolution beyond the dialer's.
func newGRPCConn(addr string) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Big windows: a busy subscriber must not be throttled by flow
		// control on the client side.
		grpc.WithInitialWindowSize(1<<20),
		grpc.WithInitialConnWindowSize(4<<20),
	)
	if err != nil {
		return nil, fmt.Errorf("grpc client %s: %w", addr, err)
	}
	return cc, nil
}

// withToken adds the bearer token, if any, to ctx's outgoing metadata.
func withToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// openStream opens a Stream on cc with the long-lived context sctx and joins
// room as user (live messages only, no events). setup bounds the opening:
// when it ends first, the stream is cancelled.
// With events, the stream gets an acknowledgement (or an error) for each
// message it sends: the publishers' streams ask for them.
func openStream(setup, sctx context.Context, cc *grpc.ClientConn, user, room string, events bool) (grpc.BidiStreamingClient[api.Message, api.Message], error) {
	sctx, cancel := context.WithCancel(sctx)
	stop := context.AfterFunc(setup, cancel)
	defer stop()
	stream, err := api.NewChatClient(cc).Stream(sctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open stream: %w", err)
	}
	if err := stream.Send(&api.Message{User: user, Room: room, Join: &api.Join{NoHistory: true, Events: events}}); err != nil {
		cancel()
		return nil, fmt.Errorf("join: %w", err)
	}
	// The stream lives on with sctx; cancel is released with it.
	context.AfterFunc(sctx, cancel)
	return stream, nil
}

// grpcSub is a gRPC subscriber: one stream, on a connection it may share.
type grpcSub struct {
	stream grpc.BidiStreamingClient[api.Message, api.Message]
	cancel context.CancelFunc
	id     int
}

func dialGRPCSub(ctx context.Context, cfg *config, i int, cc *grpc.ClientConn) (*grpcSub, error) {
	sctx, cancel := context.WithCancel(withToken(context.Background(), cfg.token))
	stream, err := openStream(ctx, sctx, cc, subUser(i), cfg.room(i%cfg.rooms), false)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscriber %d: %w", i, err)
	}
	return &grpcSub{stream: stream, cancel: cancel, id: i}, nil
}

// run receives until the stream ends; the error says why.
func (s *grpcSub) run(st *subStats, p *plan) error {
	var m api.Message
	for {
		if err := s.stream.RecvMsg(&m); err != nil {
			return fmt.Errorf("subscriber %d (grpc): %w", s.id, err)
		}
		now := time.Now().UnixNano()
		if m.GetKind() != api.Kind_KIND_MESSAGE {
			st.foreign++
			continue
		}
		observe(st, p, m.GetText(), m.GetSeq(), now)
	}
}

func (s *grpcSub) close() { s.cancel() }
