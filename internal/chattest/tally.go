package chattest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"example.com/chat/api"
)

// The fault tests count, per receiver, what issue 13 asks for:
// acknowledged messages, received, lost, duplicated, and lost without a
// KIND_TRUNCATED notice (silent).

// Seed is a raw gRPC stream that joined as a seed client does (its first
// message names the user; no events: it cannot be told of a gap), or that
// resumed from a point (JoinResume), and records every stored message it
// gets.
type Seed struct {
	User string

	mu        sync.Mutex
	msgs      []*api.Message
	truncated int
	live      bool
	err       error // why the stream ended, if it did
}

// JoinSeed opens the stream on the node at grpcAddr; it ends with ctx or
// the test.
func JoinSeed(tb testing.TB, ctx context.Context, grpcAddr, user, room string) *Seed {
	tb.Helper()
	return joinRaw(tb, ctx, grpcAddr, &api.Message{User: user, Room: room})
}

// JoinResume opens a stream with events that resumes after epoch:after,
// as a client that reconnects from another node does.
func JoinResume(tb testing.TB, ctx context.Context, grpcAddr, user, room, epoch string, after uint64) *Seed {
	tb.Helper()
	return joinRaw(tb, ctx, grpcAddr, &api.Message{User: user, Room: room, Join: &api.Join{Events: true, AfterSeq: after, Epoch: epoch}})
}

func joinRaw(tb testing.TB, ctx context.Context, grpcAddr string, first *api.Message) *Seed {
	tb.Helper()
	user := first.GetUser()
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	tb.Cleanup(func() { cancel(); cc.Close() })
	st, err := api.NewChatClient(cc).Stream(sctx)
	if err != nil {
		tb.Fatal(err)
	}
	if err := st.Send(first); err != nil {
		tb.Fatal(err)
	}
	s := &Seed{User: user}
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				return
			}
			s.mu.Lock()
			switch {
			case m.GetKind() == api.Kind_KIND_LIVE:
				s.live = true
			case m.GetKind() == api.Kind_KIND_ERROR:
				s.err = fmt.Errorf("error event: %v", m.GetError())
			case m.GetKind() == api.Kind_KIND_MESSAGE && m.GetSeq() > 0:
				s.msgs = append(s.msgs, m)
			case m.GetKind() == api.Kind_KIND_TRUNCATED:
				s.truncated++
			}
			s.mu.Unlock()
		}
	}()
	return s
}

// Stored returns the stored messages received so far, in arrival order.
func (s *Seed) Stored() []*api.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// State reports whether s was told it is live (KIND_LIVE, for streams
// with events) and why its stream ended, if it did.
func (s *Seed) State() (live bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live, s.err
}

// Truncated returns how many KIND_TRUNCATED notices s got (a seed client
// gets none).
func (s *Seed) Truncated() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.truncated
}

// Has reports whether s received the stored message epoch:seq.
func (s *Seed) Has(epoch string, seq uint64) bool {
	return slices.ContainsFunc(s.Stored(), func(m *api.Message) bool { return m.GetEpoch() == epoch && m.GetSeq() == seq })
}

// Tally is what one receiver got of the acknowledged messages.
type Tally struct {
	Who                         string
	Acked, Received, Lost, Dups int
	Truncated                   bool // told of a gap (event clients only)
}

// Silent is how many acknowledged messages were lost without a notice.
func (t Tally) Silent() int {
	if t.Truncated {
		return 0
	}
	return t.Lost
}

func (t Tally) String() string {
	return fmt.Sprintf("%s: acked %d, received %d, lost %d, duplicated %d, lost without TRUNCATED %d",
		t.Who, t.Acked, t.Received, t.Lost, t.Dups, t.Silent())
}

// CountBySeq compares got (stored messages, in arrival order) with acks:
// each acked message must be received once, at the epoch and seq of its
// ack; a message received twice, or one whose (epoch, seq) was acked for
// another text, is a duplicate.
func CountBySeq(who string, acks, got []*api.Message, truncated bool) Tally {
	type key struct {
		epoch string
		seq   uint64
	}
	want := make(map[key]*api.Message, len(acks))
	for _, a := range acks {
		want[key{a.GetEpoch(), a.GetSeq()}] = a
	}
	seen := make(map[key]int)
	tl := Tally{Who: who, Acked: len(acks), Received: len(got), Truncated: truncated}
	for _, m := range got {
		k := key{m.GetEpoch(), m.GetSeq()}
		seen[k]++
		if seen[k] > 1 {
			tl.Dups++
			continue
		}
		if a := want[k]; a != nil && (a.GetText() != m.GetText() || a.GetUser() != m.GetUser()) {
			tl.Dups++ // the seq came with another message's content
			seen[k] = -1 << 30
		}
	}
	for k := range want {
		if seen[k] <= 0 {
			tl.Lost++
		}
	}
	return tl
}

// CountByText is CountBySeq for a room whose epoch changes under the test
// (a failover that lost messages): a message is known by its user and
// text, which the tests' senders make unique, wherever it was received.
// A message received again after a KIND_TRUNCATED (a replay of the new
// epoch) is not a duplicate; one received twice without is.
func CountByText(who string, acks, got []*api.Message, truncated bool) Tally {
	type key struct{ user, text string }
	tl := Tally{Who: who, Acked: len(acks), Received: len(got), Truncated: truncated}
	seen := make(map[key]int)
	for _, m := range got {
		seen[key{m.GetUser(), m.GetText()}]++
	}
	for _, a := range acks {
		n := seen[key{a.GetUser(), a.GetText()}]
		switch {
		case n == 0:
			tl.Lost++
		case n > 1 && !truncated:
			tl.Dups++
		}
	}
	return tl
}
