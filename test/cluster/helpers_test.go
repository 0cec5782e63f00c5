// Package cluster_test runs three in-process nodes (node.Run) against a
// real Redis Cluster (testutil.StartCluster: redis-server processes in
// cluster mode, sharded pub/sub) with clients of pkg/client, and checks
// that rooms spread over the cluster's masters keep the promise of a
// single Redis: every stored message reaches every other member of its
// room exactly once, in sequence order, also across a master's failover
// and a slot migration.
package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/node"
)

func TestMain(m *testing.M) {
	// go-redis logs each failed dial to a killed master on its own global
	// logger: noise here (the tests kill masters on purpose).
	redis.SetLogger(discardLogger{})
	goleak.VerifyTestMain(m,
		// After dials to a killed master fail PoolSize times in a row,
		// go-redis starts a probe goroutine per connection pool that
		// notices the pool's Close only at its next attempt, up to a
		// second later: it outlives the node that closed its client.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// Client backoff in tests: short, so that a reconnect or a retried send
// after an outage does not dominate the run time.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 500 * time.Millisecond
)

// eventually polls cond every 10 ms until it returns nil, and fails the
// test with cond's last error once timeout has passed.
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

// roomsOnMasters returns one room name per master of c (prefix p), each
// owned by a different master, and the masters in the same order.
func roomsOnMasters(t *testing.T, c *testutil.Cluster, p string) (rooms, masters []string) {
	t.Helper()
	masters = c.Masters()
	byMaster := map[string]string{}
	for i := 0; len(byMaster) < len(masters); i++ {
		if i > 10000 {
			t.Fatal("no room names found for every master")
		}
		room := p + strconv.Itoa(i)
		if m := c.MasterFor(room); byMaster[m] == "" {
			byMaster[m] = room
		}
	}
	for _, m := range masters {
		rooms = append(rooms, byMaster[m])
	}
	return rooms, masters
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

// startNodes runs three nodes in-process on loopback against the cluster
// c, each given a different seed first; they are drained and stopped at
// cleanup.
func startNodes(t *testing.T, c *testutil.Cluster, extra ...string) []node.Addrs {
	t.Helper()
	seeds := c.Addrs()
	out := make([]node.Addrs, 3)
	for i := range out {
		rot := append(slices.Clone(seeds[i%len(seeds):]), seeds[:i%len(seeds)]...)
		out[i] = startNode(t, "redis-cluster://"+strings.Join(rot, ","), "n"+strconv.Itoa(i), extra...)
	}
	return out
}

func startNode(t *testing.T, redisURL, id string, extra ...string) node.Addrs {
	t.Helper()
	return testutil.StartNode(t, append([]string{"-redis-url", redisURL, "-node-id", id}, extra...)...)
}

// addrs lists the nodes' addresses for transport tr, starting with node
// home: a client's home node first, the others where it fails over to.
func addrs(tr client.Transport, nodes []node.Addrs, home int) []string {
	out := make([]string, len(nodes))
	for k := range nodes {
		n := nodes[(home+k)%len(nodes)]
		out[k] = n.GRPC
		if tr == client.WebSocket {
			out[k] = n.HTTP
		}
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

// join dials a client of room with home node home over tr, with the tests'
// backoff, and records what it gets. It is closed at cleanup.
func join(t *testing.T, nodes []node.Addrs, home int, tr client.Transport, user, room string) *member {
	t.Helper()
	c, err := client.Dial(client.Config{
		Addrs: addrs(tr, nodes, home), Transport: tr, User: user, Room: room,
		MinBackoff: minBackoff, MaxBackoff: maxBackoff,
	})
	if err != nil {
		t.Fatal(err)
	}
	m := &member{Client: c, user: user, done: make(chan struct{})}
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

func (m *member) all() []*api.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.msgs)
}

// stored returns the stored chat messages received, in order of arrival.
func (m *member) stored() []*api.Message {
	var out []*api.Message
	for _, msg := range m.all() {
		if msg.GetKind() == api.Kind_KIND_MESSAGE && msg.GetSeq() > 0 {
			out = append(out, msg)
		}
	}
	return out
}

func (m *member) has(epoch string, seq uint64) bool {
	return slices.ContainsFunc(m.stored(), func(msg *api.Message) bool {
		return msg.GetEpoch() == epoch && msg.GetSeq() == seq
	})
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
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, m := range members {
		if err := m.WaitLive(ctx); err != nil {
			t.Fatalf("%s is not live: %v", m.user, err)
		}
	}
	eventually(t, 5*time.Second, func() error {
		for _, m := range members {
			if !slices.ContainsFunc(m.all(), func(msg *api.Message) bool { return msg.GetKind() == api.Kind_KIND_LIVE }) {
				return fmt.Errorf("%s has not recorded KIND_LIVE", m.user)
			}
		}
		return nil
	})
}

// checkDelivery checks what m received of the room's log (one epoch,
// oldest first): each stored message at most once, in increasing seq
// order, as stored; and every message of the log sent by someone else.
func checkDelivery(m *member, log []*api.Message) error {
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
	for _, r := range m.stored() {
		if r.GetEpoch() != epoch {
			return fmt.Errorf("%s: got %s:%d, of another epoch than the log's %s", m.user, r.GetEpoch(), r.GetSeq(), epoch)
		}
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
	for _, e := range log {
		if e.GetUser() != m.user && !got[e.GetSeq()] {
			return fmt.Errorf("%s: missing seq %d (%s:%q)", m.user, e.GetSeq(), e.GetUser(), e.GetText())
		}
	}
	return nil
}

// roomLog returns the room's whole stored log, oldest first, through the
// History RPC of the node at grpcAddr; it fails the test unless the log
// starts at seq 1 and is contiguous (the nodes' -history-size must hold it).
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
// Send waits for its ack, across retries), and records each acked message.
type sender struct {
	m    *member
	done chan struct{}

	mu   sync.Mutex
	acks []*api.Message
	err  error
}

// startSender sends prefix-0001 ... prefix-<n>, or until ctx ends.
func startSender(ctx context.Context, m *member, prefix string, n int) *sender {
	s := &sender{m: m, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for i := 1; i <= n; i++ {
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

// wait waits for the sender and returns its acks.
func (s *sender) wait(t *testing.T, timeout time.Duration) []*api.Message {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		t.Fatalf("%s: sender did not finish within %v (%d acked)", s.m.user, timeout, len(s.acked()))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		t.Fatal(s.err)
	}
	return slices.Clone(s.acks)
}

func (s *sender) acked() []*api.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.acks)
}

// waitAcked waits until the sender has at least n acks.
func (s *sender) waitAcked(t *testing.T, n int) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		if got := len(s.acked()); got < n {
			s.mu.Lock()
			err := s.err
			s.mu.Unlock()
			return fmt.Errorf("%s: %d acks, waiting for %d (err %v)", s.m.user, got, n, err)
		}
		return nil
	})
}

// checkAcks checks that the room's log holds exactly the sender's acked
// messages, each once, at the seqs of their acks: a send retried during an
// outage (same client id) was stored once, and no acknowledged message was
// lost.
func checkAcks(t *testing.T, log, acks []*api.Message) {
	t.Helper()
	if len(log) != len(acks) {
		t.Errorf("the log holds %d messages; the sender has %d acks", len(log), len(acks))
	}
	for i, ack := range acks {
		switch {
		case ack.GetSeq() != uint64(i+1):
			t.Errorf("ack %d (%q) has seq %d; want %d", i+1, ack.GetText(), ack.GetSeq(), i+1)
		case i >= len(log):
		case log[i].GetText() != ack.GetText() || log[i].GetEpoch() != ack.GetEpoch():
			t.Errorf("log seq %d is %q in epoch %s; the ack says %q in %s", i+1, log[i].GetText(), log[i].GetEpoch(), ack.GetText(), ack.GetEpoch())
		}
	}
}

// metric returns the value of an unlabelled series of a node's /metrics.
func metric(httpAddr, series string) (float64, error) {
	res, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("/metrics has no series %s", series)
}

// subscribers returns, per node address, PUBSUB SHARDNUMSUB and PUBSUB
// NUMSUB of channel there.
func subscribers(t *testing.T, c *testutil.Cluster, channel string) (sharded, classic map[string]int64) {
	t.Helper()
	sharded, classic = map[string]int64{}, map[string]int64{}
	for _, addr := range c.Live() {
		rc := c.Client(addr)
		s, err := rc.PubSubShardNumSub(t.Context(), channel).Result()
		if err != nil {
			t.Fatalf("PUBSUB SHARDNUMSUB on %s: %v", addr, err)
		}
		n, err := rc.PubSubNumSub(t.Context(), channel).Result()
		if err != nil {
			t.Fatalf("PUBSUB NUMSUB on %s: %v", addr, err)
		}
		sharded[addr], classic[addr] = s[channel], n[channel]
	}
	return sharded, classic
}

// checkSubscribers fails unless exactly want sharded subscriptions of
// channel are on owner, none elsewhere, and no classic one anywhere.
func checkSubscribers(c *testutil.Cluster, t *testing.T, channel, owner string, want int64) error {
	sharded, classic := subscribers(t, c, channel)
	for addr, n := range sharded {
		w := int64(0)
		if addr == owner {
			w = want
		}
		if n != w {
			return fmt.Errorf("%s has %d sharded subscribers on %s; want %d (owner %s)", channel, n, addr, w, owner)
		}
		if classic[addr] != 0 {
			return fmt.Errorf("%s has %d classic subscribers on %s", channel, classic[addr], addr)
		}
	}
	return nil
}
