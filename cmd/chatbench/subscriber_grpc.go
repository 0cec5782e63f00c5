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
// room as user with join's options. setup bounds the opening: when it ends
// first, the stream is cancelled.
func openStream(setup, sctx context.Context, cc *grpc.ClientConn, user, room string, join *api.Join) (grpc.BidiStreamingClient[api.Message, api.Message], error) {
	sctx, cancel := context.WithCancel(sctx)
	stop := context.AfterFunc(setup, cancel)
	defer stop()
	stream, err := api.NewChatClient(cc).Stream(sctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open stream: %w", err)
	}
	if err := stream.Send(&api.Message{User: user, Room: room, Join: join}); err != nil {
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

// subJoin is subscriber i's join: its first room (returned) and, on a
// multi-room stream, the others in Join.rooms, all live messages only. A
// one-room stream asks for no events (chat messages only, as a seed
// client); Join.rooms needs them.
func subJoin(cfg *config, i int) (string, *api.Join) {
	join := &api.Join{NoHistory: true, Events: cfg.roomsPerConn > 1}
	for j := 1; j < cfg.roomsPerConn; j++ {
		join.Rooms = append(join.Rooms, &api.Subscription{Room: cfg.room(cfg.subRoom(i, j)), NoHistory: true})
	}
	return cfg.room(cfg.subRoom(i, 0)), join
}

func dialGRPCSub(ctx context.Context, cfg *config, i int, cc *grpc.ClientConn) (*grpcSub, error) {
	sctx, cancel := context.WithCancel(withToken(context.Background(), cfg.token))
	room, join := subJoin(cfg, i)
	stream, err := openStream(ctx, sctx, cc, subUser(i), room, join)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscriber %d: %w", i, err)
	}
	if err := awaitLive(ctx, stream, cfg.roomsPerConn); err != nil {
		cancel()
		return nil, fmt.Errorf("subscriber %d: %w", i, err)
	}
	return &grpcSub{stream: stream, cancel: cancel, id: i}, nil
}

// awaitLive receives until every one of the stream's k rooms sent its
// KIND_LIVE (k > 1; see wsSub.awaitLive). A KIND_ERROR (a refused
// subscription) fails it; ctx ending first cancels the stream (its caller
// then does).
func awaitLive(ctx context.Context, stream grpc.BidiStreamingClient[api.Message, api.Message], k int) error {
	if k <= 1 {
		return nil
	}
	done := make(chan error, 1)
	go func() {
		var m api.Message
		for live := 0; live < k; {
			if err := stream.RecvMsg(&m); err != nil {
				done <- fmt.Errorf("waiting for %d rooms to be live (%d were): %w", k, live, err)
				return
			}
			switch m.GetKind() {
			case api.Kind_KIND_LIVE:
				live++
			case api.Kind_KIND_ERROR:
				done <- fmt.Errorf("error event while subscribing to %q: %s", m.GetRoom(), m.GetError().GetMessage())
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("waiting for %d rooms to be live: %w", k, ctx.Err())
	}
}

// run receives until the stream ends; the error says why.
func (s *grpcSub) run(st *subStats, p *plan) error {
	var m api.Message
	for {
		if err := s.stream.RecvMsg(&m); err != nil {
			return fmt.Errorf("subscriber %d (grpc): %w", s.id, err)
		}
		now := time.Now().UnixNano()
		switch m.GetKind() {
		case api.Kind_KIND_MESSAGE:
			observe(st, p, m.GetText(), m.GetRoom(), m.GetSeq(), now)
		case api.Kind_KIND_ERROR:
			// A multi-room stream goes on after an error (a refused
			// subscription, say), but the run is not what was asked.
			st.foreign++
			st.fail(fmt.Errorf("subscriber %d: error event in room %q: %s", s.id, m.GetRoom(), m.GetError().GetMessage()))
		default:
			st.foreign++
		}
	}
}

func (s *grpcSub) close() { s.cancel() }
