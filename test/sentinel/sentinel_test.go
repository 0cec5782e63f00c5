// Package sentinel_test runs in-process nodes (node.Run) against a Redis
// master watched by Redis Sentinel (testutil.StartSentinel: real
// redis-server and redis-sentinel processes) with clients of pkg/client,
// and counts, per receiver, the acknowledged messages it got, lost and got
// twice, across a crash of the master and a Sentinel-driven failover.
package sentinel_test

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/node"
)

func TestMain(m *testing.M) {
	// go-redis logs each failed dial to a killed master on its own global
	// logger: noise here (the tests kill masters on purpose).
	redis.SetLogger(discardLogger{})
	goleak.VerifyTestMain(m,
		// As in test/cluster: after dials to a killed master fail
		// PoolSize times in a row, go-redis starts a probe goroutine per
		// pool that notices the pool's Close only at its next attempt.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

const liveTimeout = 20 * time.Second

// startNodes runs n nodes in-process on the Sentinel deployment s.
func startNodes(t *testing.T, s *testutil.Sentinel, n int, extra ...string) []node.Addrs {
	t.Helper()
	out := make([]node.Addrs, n)
	for i := range out {
		out[i] = chattest.StartNode(t, s.URL(""), "n"+strconv.Itoa(i), append([]string{"-history-size", "5000"}, extra...)...)
	}
	return out
}

// room is a room's three senders (spread over the nodes, so that their
// publishes race for seqs) and one receiver per node, over gRPC and
// WebSocket in turn.
type room struct {
	name      string
	senders   []*chattest.Member
	receivers []*chattest.Member
}

func joinRoom(t *testing.T, nodes []node.Addrs, name string) *room {
	t.Helper()
	r := &room{name: name}
	for i := range 3 {
		tr := []client.Transport{client.GRPC, client.WebSocket}[i%2]
		r.senders = append(r.senders, chattest.JoinHome(t, nodes, i%len(nodes), tr, fmt.Sprintf("s%d-%s", i, tr), name))
	}
	for i := range nodes {
		tr := []client.Transport{client.GRPC, client.WebSocket}[i%2]
		r.receivers = append(r.receivers, chattest.JoinHome(t, nodes, i, tr, fmt.Sprintf("r%d-%s", i, tr), name))
	}
	chattest.WaitLive(t, liveTimeout, append(slices.Clone(r.senders), r.receivers...)...)
	return r
}

// traffic is the room's senders sending at once.
type traffic []*chattest.Sender

// send starts every sender of r (n messages each; 0: until stopped).
func send(ctx context.Context, r *room, prefix string, n int) traffic {
	var tr traffic
	for i, m := range r.senders {
		tr = append(tr, chattest.StartSender(ctx, m, fmt.Sprintf("%s%d", prefix, i), n))
	}
	return tr
}

// acked returns how many messages the senders have had acknowledged.
func (tr traffic) acked() int {
	n := 0
	for _, s := range tr {
		n += len(s.Acked())
	}
	return n
}

// waitAcked waits until the senders have n acks in all.
func (tr traffic) waitAcked(t *testing.T, n int) {
	t.Helper()
	chattest.Eventually(t, 60*time.Second, func() error {
		if got := tr.acked(); got < n {
			return fmt.Errorf("%d acks, waiting for %d", got, n)
		}
		return nil
	})
}

// stop stops every sender and returns all their acks, by seq.
func (tr traffic) stop(t *testing.T) []*api.Message {
	t.Helper()
	var all []*api.Message
	for _, s := range tr {
		all = append(all, s.Stop(t)...)
	}
	slices.SortFunc(all, func(a, b *api.Message) int { return cmp.Compare(a.GetSeq(), b.GetSeq()) })
	return all
}

// wait waits for senders of n each and returns all their acks, by seq.
func (tr traffic) wait(t *testing.T) []*api.Message {
	t.Helper()
	var all []*api.Message
	for _, s := range tr {
		all = append(all, s.Wait(t)...)
	}
	slices.SortFunc(all, func(a, b *api.Message) int { return cmp.Compare(a.GetSeq(), b.GetSeq()) })
	return all
}

// tally is what one receiver got of the senders' acknowledged messages.
type tally struct {
	acked, got, lost, dup, truncated int
}

func (c tally) String() string {
	return fmt.Sprintf("acked %d, received %d, lost %d, duplicated %d, KIND_TRUNCATED %d", c.acked, c.got, c.lost, c.dup, c.truncated)
}

// count compares what m received (by text: a reused seq carrying another
// message is a loss, not a delivery) with the acks.
func count(m *chattest.Member, acks []*api.Message) tally {
	seen := map[string]int{}
	for _, msg := range m.Stored("") {
		seen[msg.GetUser()+"\x00"+msg.GetText()]++
	}
	c := tally{acked: len(acks), truncated: m.Count(api.Kind_KIND_TRUNCATED)}
	for _, a := range acks {
		switch n := seen[a.GetUser()+"\x00"+a.GetText()]; {
		case n == 0:
			c.lost++
		default:
			c.got++
			c.dup += n - 1
		}
	}
	return c
}

// settle waits until every receiver has the last ack (the acks are by
// seq), or (when loss is tolerated) up to 30 s.
func settle(t *testing.T, r *room, acks []*api.Message, mayLose bool) {
	t.Helper()
	if !mayLose {
		chattest.WaitHas(t, 30*time.Second, acks[len(acks)-1], r.receivers...)
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		done := true
		for _, m := range r.receivers {
			if !m.Has(acks[len(acks)-1].GetEpoch(), acks[len(acks)-1].GetSeq()) {
				done = false
			}
		}
		if done {
			return
		}
		time.Sleep(50 * time.Millisecond) // poll interval, bounded by deadline
	}
}

// checkLog checks that the room's log holds exactly the acked messages,
// each once, at the seqs of their acks. With strict, every receiver got
// the log exactly (chattest.CheckDelivery); otherwise a receiver may have
// got an unacknowledged message under a seq the log gives another (see
// ghosts), which is counted and logged.
func checkLog(t *testing.T, nodes []node.Addrs, r *room, acks []*api.Message, strict bool) {
	t.Helper()
	log := chattest.RoomLog(t, nodes[0].GRPC, r.name)
	if len(log) != len(acks) {
		t.Errorf("the log holds %d messages; the senders have %d acks", len(log), len(acks))
	}
	chattest.CheckStoredOnce(t, log)
	for i, a := range acks {
		if a.GetSeq() != uint64(i+1) {
			t.Errorf("ack %d (%s %q) has seq %d; want %d", i+1, a.GetUser(), a.GetText(), a.GetSeq(), i+1)
			return
		}
		if i < len(log) && (log[i].GetText() != a.GetText() || log[i].GetUser() != a.GetUser() || log[i].GetEpoch() != a.GetEpoch()) {
			t.Errorf("log seq %d is %s %q in epoch %s; the ack says %s %q in %s", i+1, log[i].GetUser(), log[i].GetText(), log[i].GetEpoch(), a.GetUser(), a.GetText(), a.GetEpoch())
			return
		}
	}
	for _, m := range r.receivers {
		err := chattest.CheckDelivery(m, log, chattest.RejectOtherEpochs)
		switch {
		case err == nil:
		case strict:
			t.Error(err)
		default:
			t.Logf("%s: %d ghost deliveries (first: %v)", m.User, ghosts(m, log), err)
		}
	}
}

// ghosts counts the stored messages m received under a seq that the log
// gives another message. A publish the old master ran after the promotion
// of its replica is broadcast to the subscribers still on it before its
// WAIT fails; it is never acknowledged (the sender retries it), but its
// seq is reused on the new master, and the receiver then drops the
// message stored there as a duplicate. Only detecting the regression
// (issue 13, "never a silent gap") closes that; -redis-min-replicas
// guarantees the log, not the live stream.
func ghosts(m *chattest.Member, log []*api.Message) int {
	n := 0
	for _, msg := range m.Stored("") {
		i := int(msg.GetSeq()) - 1
		if i >= len(log) || log[i].GetText() != msg.GetText() || log[i].GetUser() != msg.GetUser() {
			n++
		}
	}
	return n
}

// logLoss returns how many acked messages the room's log does not hold
// at their acked seq (lost from history, and for a resuming client), and
// how many of those seqs now hold another message (reused).
func logLoss(t *testing.T, nodes []node.Addrs, r *room, acks []*api.Message) (lost, reused int) {
	t.Helper()
	log := chattest.RoomLog(t, nodes[0].GRPC, r.name)
	for _, a := range acks {
		i := int(a.GetSeq()) - 1
		switch {
		case i >= len(log):
			lost++
		case log[i].GetText() != a.GetText() || log[i].GetUser() != a.GetUser() || log[i].GetEpoch() != a.GetEpoch():
			lost++
			reused++
		}
	}
	return lost, reused
}

// waitSubscribed waits until the master the sentinels name, as
// they name it at each look, has want subscribers of room name. After a
// failover that is not always the replica first promoted: on a loaded
// machine Sentinel may fail over again (a CI run saw the nodes' connections
// to the new master closed by the server 16 s after the kill, both at
// once, as Sentinel's reconfiguration of an instance does, and the room's
// subscriptions were then elsewhere). What must hold is that the nodes
// follow whichever instance is the master. promoted is the one the test
// expects (the master it saw, or the replica first promoted), for the log.
func waitSubscribed(t *testing.T, s *testutil.Sentinel, promoted, name string, want int64) {
	t.Helper()
	ch := history.NewKeys("").Channel(name)
	start := time.Now()
	var addr string
	chattest.Eventually(t, 30*time.Second, func() error {
		a, err := s.MasterAddr()
		if err != nil {
			return err
		}
		addr = a
		n, err := s.Client(a).PubSubNumSub(t.Context(), ch).Result()
		if err == nil && n[ch] != want {
			err = fmt.Errorf("master %s has %d subscribers of %s; want %d", a, n[ch], ch, want)
		}
		return err
	})
	if addr != promoted {
		t.Logf("the sentinels failed over again: the master is %s, not %s", addr, promoted)
	}
	t.Logf("%d subscriptions of the room on the master %s (waited %v)", want, addr, time.Since(start).Round(time.Millisecond))
}

func waitReady(t *testing.T, nodes []node.Addrs) {
	t.Helper()
	for _, n := range nodes {
		chattest.Eventually(t, 30*time.Second, func() error {
			code, body, err := chattest.HTTPGet("http://" + n.HTTP + "/readyz")
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("node %s: /readyz %d %q", n.HTTP, code, body)
			}
			return err
		})
	}
}

// TestThroughSentinel: two nodes find the master through the sentinels,
// are ready, and deliver every message across nodes exactly once, in
// order; both nodes' subscriptions are on the master.
func TestThroughSentinel(t *testing.T) {
	t.Parallel()
	s := testutil.StartSentinel(t, 1)
	nodes := startNodes(t, s, 2)
	waitReady(t, nodes)
	r := joinRoom(t, nodes, "through")
	waitSubscribed(t, s, s.Master(), r.name, int64(len(nodes)))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	acks := send(ctx, r, "m", 50).wait(t)
	settle(t, r, acks, false)
	checkLog(t, nodes, r, acks, true)
	for _, m := range r.receivers {
		t.Logf("%s: %v", m.User, count(m, acks))
	}
}

// TestMasterKilled: the master is SIGKILLed under continuous traffic;
// Sentinel promotes a replica (of two) and the nodes follow it: sends
// resume (retried by the client with their client id), subscriptions move
// to the new master. With -redis-min-replicas 1 no acknowledged message
// may be lost or duplicated; without it, replication is asynchronous and
// the condition is that nothing is lost silently: a receiver missing an
// acknowledged message must have been told (KIND_TRUNCATED).
func TestMasterKilled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		minReplicas int
		lag         bool // the replicas are stopped for a while just before the kill
	}{
		{minReplicas: 0},
		{minReplicas: 1, lag: true},
	} {
		minReplicas := tc.minReplicas
		t.Run(fmt.Sprintf("min-replicas=%d,lag=%v", minReplicas, tc.lag), func(t *testing.T) {
			t.Parallel()
			s := testutil.StartSentinel(t, 2)
			nodes := startNodes(t, s, 2, "-redis-min-replicas", strconv.Itoa(minReplicas))
			waitReady(t, nodes)
			r := joinRoom(t, nodes, "killed")
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			snd := send(ctx, r, "k", 0)
			snd.waitAcked(t, 100)
			old := s.Master()
			if tc.lag {
				// Both replicas stop (SIGSTOP) for less than Sentinel's
				// down-after-milliseconds, while the sender goes on, and
				// the master dies just after they resume: they may lack
				// the master's last writes. With min-replicas those were
				// never acknowledged (WAIT timed out) and are retried.
				replicas := s.Replicas()
				for _, a := range replicas {
					s.Pause(a)
				}
				before := snd.acked()
				time.Sleep(700 * time.Millisecond) // the lag itself, not a synchronisation
				for _, a := range replicas {
					s.Resume(a)
				}
				t.Logf("replicas stopped for 700ms: %d acks meanwhile", snd.acked()-before)
			}
			s.Kill(old)
			killedAt := snd.acked()
			start := time.Now()
			nm := s.WaitMaster(old)
			t.Logf("master %s killed after %d acks; %s promoted after %v", old, killedAt, nm, time.Since(start).Round(time.Millisecond))
			snd.waitAcked(t, killedAt+100) // traffic resumed on the new master
			t.Logf("traffic resumed %v after the kill", time.Since(start).Round(time.Millisecond))
			acks := snd.stop(t)
			waitSubscribed(t, s, nm, r.name, int64(len(nodes)))
			waitReady(t, nodes)
			settle(t, r, acks, minReplicas == 0)
			for _, m := range r.receivers {
				c := count(m, acks)
				t.Logf("%s: %v", m.User, c)
				if c.dup > 0 {
					t.Errorf("%s: %d acknowledged messages received twice", m.User, c.dup)
				}
				if c.lost > 0 && (minReplicas > 0 || c.truncated == 0) {
					t.Errorf("%s lost %d acknowledged messages (KIND_TRUNCATED %d times)", m.User, c.lost, c.truncated)
				}
			}
			lost, reused := logLoss(t, nodes, r, acks)
			t.Logf("history: %d of %d acknowledged messages lost, %d of their seqs reused", lost, len(acks), reused)
			if minReplicas > 0 {
				checkLog(t, nodes, r, acks, false)
			}
		})
	}
}

// TestSentinelFailover: SENTINEL FAILOVER under continuous traffic, with
// -redis-min-replicas 1 and one replica: the replica is promoted, the old
// master demoted (Sentinel kills its clients), and the nodes follow. Writes
// that reached the old master after the promotion cannot be confirmed by
// the promoted replica, so they are never acknowledged; the client retries
// them with their client id on the new master. Nothing acknowledged is lost
// or duplicated (per receiver, by content), the log holds exactly the
// acked messages at their acked seqs, and the subscriptions are on the
// new master. Receivers may have seen ghosts (see ghosts): logged, not
// failed, until the hub detects seq regressions.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	s := testutil.StartSentinel(t, 1)
	nodes := startNodes(t, s, 2, "-redis-min-replicas", "1")
	waitReady(t, nodes)
	r := joinRoom(t, nodes, "failover")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	snd := send(ctx, r, "f", 0)
	snd.waitAcked(t, 100)
	start := time.Now()
	old := s.Failover()
	at := snd.acked()
	nm := s.WaitMaster(old)
	t.Logf("failover from %s to %s after %d acks, done in %v", old, nm, at, time.Since(start).Round(time.Millisecond))
	snd.waitAcked(t, at+100)
	t.Logf("traffic resumed: 100 more acks %v after the failover began", time.Since(start).Round(time.Millisecond))
	acks := snd.stop(t)
	waitSubscribed(t, s, nm, r.name, int64(len(nodes)))
	waitReady(t, nodes)
	settle(t, r, acks, false)
	lost, reused := logLoss(t, nodes, r, acks)
	t.Logf("history: %d of %d acknowledged messages lost, %d of their seqs reused", lost, len(acks), reused)
	for _, m := range r.receivers {
		c := count(m, acks)
		t.Logf("%s: %v", m.User, c)
		if c.lost > 0 || c.dup > 0 {
			t.Errorf("%s: %v; want nothing lost or duplicated", m.User, c)
		}
	}
	checkLog(t, nodes, r, acks, false)
}
