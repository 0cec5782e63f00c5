package integration_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
)

// pacedSender sends numbered messages every interval (each Send waits for
// its ack, across retries) until stopped, and records the acks. A frozen
// node must not lose or repeat what its clients had in flight, so the
// senders keep going through the freeze.
type pacedSender struct {
	m      *chattest.Member
	prefix string
	stop   chan struct{}
	done   chan struct{}

	mu   sync.Mutex
	acks []*api.Message
	err  error
}

func startPaced(ctx context.Context, m *chattest.Member, prefix string, every time.Duration) *pacedSender {
	s := &pacedSender{m: m, prefix: prefix, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			text := fmt.Sprintf("%s-%05d", prefix, i)
			// 20 s: far more than a failover takes; a send still
			// waiting then is the bug this test is about.
			sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			ack, err := m.Send(sctx, text)
			cancel()
			s.mu.Lock()
			if err != nil {
				s.err = fmt.Errorf("%s: send %q: %w", m.User, text, err)
			} else {
				s.acks = append(s.acks, &api.Message{User: m.User, Text: text, Seq: ack.GetSeq(), Epoch: ack.GetEpoch()})
			}
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return s
}

func (s *pacedSender) acked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acks)
}

// waitMore waits until the sender has n acks more than it had at from.
func (s *pacedSender) waitAcked(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	chattest.Eventually(t, timeout, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.err != nil {
			return s.err
		}
		if len(s.acks) < n {
			return fmt.Errorf("%s: %d acks, waiting for %d", s.m.User, len(s.acks), n)
		}
		return nil
	})
}

func (s *pacedSender) halt(t *testing.T) []*api.Message {
	t.Helper()
	close(s.stop)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: sender did not stop within 30 s", s.m.User)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.acks
}

// TestFrozenNodeClientsFailOver: two node processes with -heartbeat 1s;
// node 1 is SIGSTOPped (alive to the kernel, silent to its peers) while
// senders on both nodes keep sending. The clients of node 1 notice the
// missing heartbeat, reconnect to node 2 within the heartbeat timeout
// plus backoff, resume without loss or duplicate, and the sends they had
// in flight are retried with their client id and stored once, even after
// node 1 wakes up and reads what was waiting in its sockets.
func TestFrozenNodeClientsFailOver(t *testing.T) {
	t.Parallel()
	bin := buildNode(t)
	rs := testutil.StartRedis(t)
	const heartbeat = time.Second
	procs, nodes := startProcs(t, bin, rs.Addr(), "z", 2, "-heartbeat", heartbeat.String(), "-history-size", "20000")
	frozen := procs[0]
	// Cleanups run last-in first-out: the node is woken before its
	// SIGTERM.
	t.Cleanup(func() { _ = frozen.cmd.Process.Signal(syscall.SIGCONT) })
	room := newRoom()

	// The node's keepalive ticks every half heartbeat, so a live node's
	// silent stream hears from it at least every 1.5 heartbeats.
	const silence = 2 * heartbeat
	join := func(user string, tr client.Transport, home int) *chattest.Member {
		return chattest.Join(t, client.Config{
			Addrs: chattest.Addrs(tr, chattest.Rotate(nodes, home)...), Transport: tr,
			User: user, Room: room, HeartbeatTimeout: silence,
		})
	}
	aGRPC := join("a-send-grpc", client.GRPC, 0)
	aWS := join("a-send-ws", client.WebSocket, 0)
	onFrozen := []*chattest.Member{aGRPC, aWS, join("a-recv-grpc", client.GRPC, 0), join("a-recv-ws", client.WebSocket, 0)}
	bSend := join("b-send-grpc", client.GRPC, 1)
	others := []*chattest.Member{bSend, join("b-recv-ws", client.WebSocket, 1)}
	members := append(append([]*chattest.Member{}, onFrozen...), others...)
	chattest.WaitLive(t, liveTimeout, members...)

	ctx := t.Context()
	senders := []*pacedSender{
		startPaced(ctx, aGRPC, "ag", 5*time.Millisecond),
		startPaced(ctx, aWS, "aw", 5*time.Millisecond),
		startPaced(ctx, bSend, "bg", 5*time.Millisecond),
	}
	for _, s := range senders {
		s.waitAcked(t, 50, 30*time.Second)
	}

	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	atFreeze := make([]int, len(senders))
	for i, s := range senders {
		atFreeze[i] = s.acked()
	}
	// Every client of node 1 is live on node 2 again within the heartbeat
	// timeout plus its backoff (and a second for the join on a loaded
	// machine).
	bound := silence + chattest.MaxBackoff + 2*time.Second
	chattest.Eventually(t, 3*bound, func() error {
		for _, m := range onFrozen {
			if m.Reconnects.Load() == 0 {
				return fmt.Errorf("%s has not reconnected %v after node 1 froze", m.User, time.Since(stopped))
			}
		}
		return nil
	})
	wctx, cancel := context.WithDeadline(ctx, stopped.Add(3*bound))
	defer cancel()
	for _, m := range onFrozen {
		if err := m.WaitLive(wctx); err != nil {
			t.Fatalf("%s not live again %v after node 1 froze: %v", m.User, time.Since(stopped), err)
		}
	}
	if took := time.Since(stopped); took > bound {
		t.Errorf("node 1's clients took %v to be live on node 2; want under %v", took, bound)
	} else {
		t.Logf("node 1's clients were live on node 2 %v after it froze", took)
	}
	// The senders of node 1 go on through node 2, starting with the send
	// that was in flight at the freeze.
	for i, s := range senders {
		s.waitAcked(t, atFreeze[i]+50, 30*time.Second)
	}

	// Node 1 wakes up and reads what its sockets held: sends that were
	// retried on node 2 meanwhile must not be stored again.
	if err := frozen.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	chattest.Eventually(t, 30*time.Second, func() error {
		code, _, err := chattest.HTTPGet("http://" + nodes[0].HTTP + "/healthz")
		if err != nil || code != 200 {
			return fmt.Errorf("node 1 not answering after SIGCONT: %d %v", code, err)
		}
		return nil
	})
	for i, s := range senders {
		s.waitAcked(t, atFreeze[i]+100, 30*time.Second)
	}
	var acks []*api.Message
	for _, s := range senders {
		a := s.halt(t)
		// Fence: each sender's last message, received by everyone else,
		// means all earlier ones were delivered (or never will be).
		chattest.WaitHas(t, 30*time.Second, a[len(a)-1], chattest.Except(members, s.m)...)
		acks = append(acks, a...)
	}

	log := chattest.RoomLog(t, nodes[1].GRPC, room)
	if len(log) != len(acks) {
		t.Errorf("log holds %d messages; %d were acknowledged, each must be stored once", len(log), len(acks))
	}
	chattest.CheckStoredOnce(t, log)
	chattest.CheckAcksInLog(t, acks, log)
	for _, m := range members {
		if err := chattest.CheckDelivery(m, log, chattest.RejectOtherEpochs); err != nil {
			t.Error(err)
		}
		if n := m.Count(api.Kind_KIND_TRUNCATED); n != 0 {
			t.Errorf("%s was told %d times that messages were lost", m.User, n)
		}
	}
	for _, m := range others {
		if n := m.Reconnects.Load(); n != 0 {
			t.Errorf("%s reconnected %d times; its node stayed up", m.User, n)
		}
	}
}
