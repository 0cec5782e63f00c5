package client_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/client"
)

const testSecret = "0123456789abcdef0123456789abcdef"

// states records what OnState reports.
type states struct {
	mu  sync.Mutex
	all []client.State
	ch  chan client.State
}

func newStates() *states { return &states{ch: make(chan client.State, 1000)} }

func (s *states) on(st client.State) {
	s.mu.Lock()
	s.all = append(s.all, st)
	s.mu.Unlock()
	select {
	case s.ch <- st:
	default:
	}
}

func (s *states) waitKind(t *testing.T, k client.StateKind, within time.Duration) client.State {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case st := <-s.ch:
			if st.Kind == k {
				return st
			}
		case <-timer.C:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("no %v state within %v; saw %+v", k, within, s.all)
		}
	}
}

// TestPermanentRefusalsStopTheClient: a token the node refuses, a token
// for another user, a room the token does not allow, or an invalid room
// stop the client at once with a PermanentError, on both transports,
// instead of retrying forever.
func TestPermanentRefusalsStopTheClient(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t, "-jwt-secret", testSecret)
	mint := func(user string, rooms []string, ttl time.Duration) string {
		tok, err := auth.Mint([]byte(testSecret), user, rooms, ttl, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	expired := mint("alice", nil, time.Millisecond)
	time.Sleep(1100 * time.Millisecond) // exp has a resolution of a second
	for _, c := range []struct {
		name       string
		user, room string
		token      string
		grpcCode   codes.Code
	}{
		{"expired token", "alice", "general", expired, codes.Unauthenticated},
		{"garbage token", "alice", "general", "not-a-jwt", codes.Unauthenticated},
		{"no token", "alice", "general", "", codes.Unauthenticated},
		{"another user's token", "alice", "general", mint("bob", nil, time.Hour), codes.PermissionDenied},
		{"forbidden room", "alice", "secret", mint("alice", []string{"general"}, time.Hour), codes.PermissionDenied},
		{"invalid room", "alice", "bad room!", mint("alice", nil, time.Hour), codes.InvalidArgument},
	} {
		for _, tr := range []client.Transport{client.GRPC, client.WebSocket} {
			t.Run(c.name+"/"+string(tr), func(t *testing.T) {
				t.Parallel()
				addr := a.GRPC
				if tr == client.WebSocket {
					addr = a.HTTP
				}
				st := newStates()
				cl, err := client.Dial(client.Config{Addrs: []string{addr}, Transport: tr, User: c.user, Room: c.room, Token: c.token, OnState: st.on})
				if err != nil {
					t.Fatal(err)
				}
				defer cl.Close()
				select {
				case <-cl.Done():
				case <-time.After(5 * time.Second):
					t.Fatalf("client still running after 5 s (reconnects: %d)", cl.Reconnects.Load())
				}
				var pe *client.PermanentError
				if err := cl.Err(); !errors.As(err, &pe) {
					t.Fatalf("Err() = %v, want a *PermanentError", err)
				}
				if tr == client.GRPC && status.Code(errors.Unwrap(cl.Err())) != c.grpcCode {
					t.Errorf("Err() = %v, want code %v", cl.Err(), c.grpcCode)
				}
				if got := st.waitKind(t, client.Stopped, time.Second); got.Err == nil {
					t.Errorf("Stopped state without its error")
				}
				if _, err := cl.Send(context.Background(), "x"); !errors.As(err, &pe) {
					t.Errorf("Send after the refusal: %v, want the PermanentError", err)
				}
			})
		}
	}
}

// TestStatesAndAddr: an unreachable address is reported (Reconnecting with
// the dial error) within a second; a live connection reports Live and
// its address.
func TestStatesAndAddr(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	a := testutil.StartNode(t)
	st := newStates()
	cl, err := client.Dial(client.Config{Addrs: []string{dead, a.GRPC}, User: "u", Room: "r", OnState: st.on, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	r := st.waitKind(t, client.Reconnecting, time.Second)
	if r.Addr != dead || r.Err == nil || r.Failures != 1 {
		t.Errorf("first state change %+v; want Reconnecting from %s with the dial error", r, dead)
	}
	l := st.waitKind(t, client.Live, 5*time.Second)
	if l.Addr != a.GRPC || cl.Addr() != a.GRPC {
		t.Errorf("live on %q, Addr() %q; want %s", l.Addr, cl.Addr(), a.GRPC)
	}
	cl.Close()
	if s := st.waitKind(t, client.Stopped, time.Second); s.Err != nil {
		t.Errorf("Stopped after Close with %v, want nil", s.Err)
	}
	if !errors.Is(cl.Err(), client.ErrClosed) {
		t.Errorf("Err() after Close = %v", cl.Err())
	}
}

// TestOwnAcksMoveTheResumePoint: a node never sends a client its own
// messages, so the resume point must count their acknowledgements, or a
// resume replays them as new.
func TestOwnAcksMoveTheResumePoint(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	other, err := client.Dial(client.Config{Addrs: []string{a.GRPC}, User: "other", Room: "own", NoHistory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	me, err := client.Dial(client.Config{Addrs: []string{a.GRPC}, User: "me", Room: "own", NoHistory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer me.Close()
	for _, c := range []*client.Client{other, me} {
		if err := c.WaitLive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := me.Send(ctx, "mine"); err != nil {
			t.Fatal(err)
		}
		if _, seq := me.Position(); seq != uint64(i+1) {
			t.Fatalf("after %d own messages the position is %d", i+1, seq)
		}
	}
	ack, err := other.Send(ctx, "theirs")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, seq := me.Position(); seq == ack.GetSeq() {
			break
		}
		if time.Now().After(deadline) {
			_, seq := me.Position()
			t.Fatalf("position %d, want %d after the other's message", seq, ack.GetSeq())
		}
		time.Sleep(10 * time.Millisecond) // polling the client's state
	}
	if _, err := me.Send(ctx, "mine again"); err != nil {
		t.Fatal(err)
	}
	if ep, seq := me.Position(); seq != ack.GetSeq()+1 || ep != ack.GetEpoch() {
		t.Fatalf("position %s:%d, want %s:%d", ep, seq, ack.GetEpoch(), ack.GetSeq()+1)
	}
}
