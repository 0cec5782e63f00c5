// Package integration_test runs whole nodes (in-process through node.Run,
// or as cmd/node processes that can be SIGKILLed) against a real
// redis-server on loopback, with clients of pkg/client and raw streams,
// and checks the cluster's promise: every stored message reaches every
// other member of its room exactly once, in sequence order, across nodes,
// transports, node crashes and Redis faults.
//
// Each test starts its own redis-server (testutil.StartRedis, or REDIS_ADDR
// when set) and uses a room name of its own, so the tests run in parallel.
package integration_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/node"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeNodeBinary()
		os.Exit(code)
	}))
}

// Client backoff in tests: short, so that a reconnect or a retried send
// after an outage does not dominate the run time.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 500 * time.Millisecond
)

// eventually polls cond every 10 ms until it returns nil, and fails the
// test with cond's last error once timeout has passed (NATS's checkFor).
func eventually(tb testing.TB, timeout time.Duration, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %v", timeout, err)
		}
		<-tick.C
	}
}

// newRoom returns a room name no other test or run uses, so that tests may
// share a Redis (REDIS_ADDR).
func newRoom() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "r-" + hex.EncodeToString(b[:])
}

// logBuffer keeps the tail of a node's log, shown when its test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const logTail = 64 << 10

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if l.buf.Len() > 2*logTail {
		tail := append([]byte(nil), l.buf.Bytes()[l.buf.Len()-logTail:]...)
		l.buf.Reset()
		l.buf.Write(tail)
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startNodes runs n nodes in-process on loopback, on the Redis rs, named
// n0, n1, ...; they are drained and stopped at cleanup.
func startNodes(t *testing.T, rs *testutil.RedisServer, n int, extra ...string) []node.Addrs {
	t.Helper()
	out := make([]node.Addrs, n)
	for i := range out {
		out[i] = startNode(t, rs.Addr(), "n"+strconv.Itoa(i), extra...)
	}
	return out
}

func startNode(t *testing.T, redisAddr, id string, extra ...string) node.Addrs {
	t.Helper()
	return testutil.StartNode(t, append([]string{"-redis-url", "redis://" + redisAddr + "/0", "-node-id", id}, extra...)...)
}

// addrs lists the nodes' addresses for transport tr, in the order given:
// the first is a client's home node, the others where it fails over to.
func addrs(tr client.Transport, nodes ...node.Addrs) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.GRPC
		if tr == client.WebSocket {
			out[i] = n.HTTP
		}
	}
	return out
}

// rotate returns nodes starting at index i: home node i, then the others.
func rotate(nodes []node.Addrs, i int) []node.Addrs {
	out := make([]node.Addrs, 0, len(nodes))
	for k := range nodes {
		out = append(out, nodes[(i+k)%len(nodes)])
	}
	return out
}

// member is a pkg/client Client whose every received message is recorded.
type member struct {
	*client.Client
	user string

	mu   sync.Mutex
	msgs []*api.Message
	done chan struct{} // the recorder ended (Messages was closed)
}

// join dials a client with the tests' backoff and records what it gets.
// It is closed at cleanup.
func join(t *testing.T, cfg client.Config) *member {
	t.Helper()
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = minBackoff, maxBackoff
	}
	c, err := client.Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{Client: c, user: cfg.User, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for msg := range c.Messages() {
			m.mu.Lock()
			m.msgs = append(m.msgs, msg)
			m.mu.Unlock()
		}
	}()
	t.Cleanup(m.Close)
	return m
}

// Close closes the client and waits for the recorder.
func (m *member) Close() {
	m.Client.Close()
	<-m.done
}

// all returns a copy of everything received, in order.
func (m *member) all() []*api.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*api.Message(nil), m.msgs...)
}

// stored returns the stored chat messages received in epoch (any epoch if
// empty), in order of arrival.
func (m *member) stored(epoch string) []*api.Message {
	var out []*api.Message
	for _, msg := range m.all() {
		if msg.GetKind() == api.Kind_KIND_MESSAGE && msg.GetSeq() > 0 && (epoch == "" || msg.GetEpoch() == epoch) {
			out = append(out, msg)
		}
	}
	return out
}

// count returns how many frames of kind m received.
func (m *member) count(kind api.Kind) int {
	n := 0
	for _, msg := range m.all() {
		if msg.GetKind() == kind {
			n++
		}
	}
	return n
}

// has reports whether m received the stored message epoch:seq.
func (m *member) has(epoch string, seq uint64) bool {
	for _, msg := range m.stored(epoch) {
		if msg.GetSeq() == seq {
			return true
		}
	}
	return false
}

// waitHas waits until every member received the stored message of ack.
func waitHas(t *testing.T, timeout time.Duration, ack *api.Message, members ...*member) {
	t.Helper()
	eventually(t, timeout, func() error {
		for _, m := range members {
			if !m.has(ack.GetEpoch(), ack.GetSeq()) {
				return fmt.Errorf("%s has not received %s:%d (%q)", m.user, ack.GetEpoch(), ack.GetSeq(), ack.GetText())
			}
		}
		return nil
	})
}

func waitLive(t *testing.T, members ...*member) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, m := range members {
		if err := m.WaitLive(ctx); err != nil {
			t.Fatalf("%s is not live: %v", m.user, err)
		}
	}
	// The client is live once it handled KIND_LIVE; the recorder gets
	// the frames a moment later.
	eventually(t, 5*time.Second, func() error {
		for _, m := range members {
			if !slices.ContainsFunc(m.all(), func(msg *api.Message) bool { return msg.GetKind() == api.Kind_KIND_LIVE }) {
				return fmt.Errorf("%s has not recorded KIND_LIVE", m.user)
			}
		}
		return nil
	})
}

// checkDelivery checks what m received of the room's log (one epoch, as
// roomLog returns it, oldest first): each stored message at most once, in
// increasing seq order, as stored (user, text); and every message of the
// log after seq from sent by someone else. m's own messages may be missing
// (a sender gets acks, not its messages) or present (a resume replays
// them).
func checkDelivery(m *member, log []*api.Message, from uint64) error {
	if len(log) == 0 {
		return fmt.Errorf("%s: empty log", m.user)
	}
	epoch := log[0].GetEpoch()
	bySeq := make(map[uint64]*api.Message, len(log))
	for _, e := range log {
		bySeq[e.GetSeq()] = e
	}
	got := make(map[uint64]bool)
	var last uint64
	for _, r := range m.stored(epoch) {
		if r.GetSeq() <= last {
			return fmt.Errorf("%s: got seq %d after seq %d: duplicate or out of order", m.user, r.GetSeq(), last)
		}
		last = r.GetSeq()
		want := bySeq[r.GetSeq()]
		if want == nil {
			return fmt.Errorf("%s: got seq %d (%q), which the log does not hold", m.user, r.GetSeq(), r.GetText())
		}
		if r.GetText() != want.GetText() || r.GetUser() != want.GetUser() {
			return fmt.Errorf("%s: seq %d is %s:%q, the log has %s:%q", m.user, r.GetSeq(), r.GetUser(), r.GetText(), want.GetUser(), want.GetText())
		}
		got[r.GetSeq()] = true
	}
	missing := 0
	var first uint64
	for _, e := range log {
		if e.GetSeq() > from && e.GetUser() != m.user && !got[e.GetSeq()] {
			if missing == 0 {
				first = e.GetSeq()
			}
			missing++
		}
	}
	if missing > 0 {
		return fmt.Errorf("%s: missing %d messages of others, the first seq %d", m.user, missing, first)
	}
	return nil
}

// seqs returns the seq of each message.
func seqs(msgs []*api.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetSeq()
	}
	return out
}

// seqRange returns from, from+1, ..., to.
func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// roomLog returns the room's whole stored log, oldest first, through the
// History RPC of the node at grpcAddr. The nodes' -history-size must hold
// it all: it fails the test unless the log starts at seq 1 and is
// contiguous.
func roomLog(t *testing.T, grpcAddr, room string) []*api.Message {
	t.Helper()
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := api.NewChatClient(cc).History(ctx, &api.HistoryRequest{Room: room})
	if err != nil {
		t.Fatalf("history of %s: %v", room, err)
	}
	log := res.GetMessages()
	for i, m := range log {
		if m.GetSeq() != uint64(i+1) || m.GetEpoch() != res.GetEpoch() {
			t.Fatalf("history of %s: entry %d is %s:%d; want the whole log of epoch %s from seq 1", room, i, m.GetEpoch(), m.GetSeq(), res.GetEpoch())
		}
	}
	return log
}

// sender sends numbered messages in the background, one at a time (each
// Send waits for its ack, across retries), and records each acked message
// (user, text, and the seq and epoch of its ack).
type sender struct {
	m      *member
	prefix string
	stop   chan struct{}
	done   chan struct{}

	mu   sync.Mutex
	acks []*api.Message
	err  error
}

// startSender sends prefix-0001, prefix-0002, ... until n are acked (n = 0:
// until stopped), or ctx ends.
func startSender(ctx context.Context, m *member, prefix string, n int) *sender {
	s := &sender{m: m, prefix: prefix, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for i := 1; n == 0 || i <= n; i++ {
			select {
			case <-s.stop:
				return
			default:
			}
			text := fmt.Sprintf("%s-%04d", prefix, i)
			ack, err := m.Send(ctx, text)
			s.mu.Lock()
			if err != nil {
				s.err = fmt.Errorf("%s: send %d: %w", m.user, i, err)
			} else {
				s.acks = append(s.acks, &api.Message{User: m.user, Text: text, Seq: ack.GetSeq(), Epoch: ack.GetEpoch()})
			}
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return s
}

// wait stops the sender (if it runs until stopped), waits for it and
// returns its acks.
func (s *sender) wait(t *testing.T, stop bool) []*api.Message {
	t.Helper()
	if stop {
		close(s.stop)
	}
	select {
	case <-s.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: sender did not finish within 60s", s.m.user)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		t.Fatal(s.err)
	}
	return append([]*api.Message(nil), s.acks...)
}

func (s *sender) acked() []*api.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*api.Message(nil), s.acks...)
}

// waitAcked waits until the sender has at least n acks and returns them.
func (s *sender) waitAcked(t *testing.T, n int) []*api.Message {
	t.Helper()
	var acks []*api.Message
	eventually(t, 30*time.Second, func() error {
		if acks = s.acked(); len(acks) < n {
			s.mu.Lock()
			err := s.err
			s.mu.Unlock()
			return fmt.Errorf("%s: %d acks, waiting for %d (err %v)", s.m.user, len(acks), n, err)
		}
		return nil
	})
	return acks
}
