package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/pubsub"
	"example.com/chat/pkg/pubsub/pubsubtest"
)

// newClusterClient returns a cluster client of c with the node's short
// timeouts, closed at the end of the test (after the broker).
func newClusterClient(t *testing.T, c *testutil.Cluster) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:         c.Addrs(),
		DialTimeout:   time.Second,
		ReadTimeout:   2 * time.Second,
		WriteTimeout:  2 * time.Second,
		MaxRetries:    1,
		DialerRetries: 1,
	})
	t.Cleanup(func() {
		_ = cc.Close()
		awaitDialProbes(t)
	})
	return cc
}

// awaitDialProbes waits (up to 3 s) for go-redis's dial probes to end:
// after dials to a killed master fail PoolSize times in a row, go-redis
// starts a goroutine per connection pool that notices the pool's Close
// only at its next attempt, a second later, and goleak would report it.
func awaitDialProbes(t *testing.T) {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		buf := make([]byte, 1<<20)
		if !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "pool.(*ConnPool).tryDial") {
			return
		}
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by deadline
	}
}

// newClusterBroker returns a broker (closed at the end of the test) and its
// store under a prefix of the test's own.
func newClusterBroker(t *testing.T, cc *redis.ClusterClient) (*pubsub.RedisCluster, *history.Redis) {
	t.Helper()
	prefix := testutil.UniquePrefix(t)
	b := pubsub.NewRedisCluster(pubsub.RedisClusterConfig{
		Client:       cc,
		Prefix:       prefix,
		HistorySize:  pubsubtest.HistorySize,
		PingInterval: 500 * time.Millisecond,
		Logger:       testutil.Logger(t),
	})
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b, history.NewRedis(history.RedisConfig{Client: cc, Prefix: prefix})
}

func TestRedisClusterContract(t *testing.T) {
	t.Parallel()
	c := testutil.StartCluster(t, 3, 0)
	pubsubtest.Run(t, func(t *testing.T) (pubsub.Broker, history.Store, pubsubtest.Resetter) {
		cc := newClusterClient(t, c)
		b, st := newClusterBroker(t, cc)
		reset := func(t *testing.T, room string) {
			k := b.Keys()
			if err := cc.Del(t.Context(), k.Meta(room), k.Log(room)).Err(); err != nil {
				t.Fatalf("reset %q: %v", room, err)
			}
		}
		return b, st, reset
	})
}

// roomsOn returns n room names (with prefix p) whose slots the master at
// addr owns, and n more owned by other masters.
func roomsOn(t *testing.T, c *testutil.Cluster, addr, p string, n int) (on, off []string) {
	t.Helper()
	for i := 0; len(on) < n || len(off) < n; i++ {
		if i > 10000 {
			t.Fatal("no room names found for every master")
		}
		room := fmt.Sprintf("%s%d", p, i)
		if c.MasterFor(room) == addr {
			if len(on) < n {
				on = append(on, room)
			}
		} else if len(off) < n {
			off = append(off, room)
		}
	}
	return on, off
}

// shardNumSub returns the number of subscribers of channel on the node at
// addr (PUBSUB SHARDNUMSUB is per node).
func shardNumSub(t *testing.T, c *testutil.Cluster, addr, channel string) int64 {
	t.Helper()
	n, err := c.Client(addr).PubSubShardNumSub(t.Context(), channel).Result()
	if err != nil {
		t.Fatalf("PUBSUB SHARDNUMSUB on %s: %v", addr, err)
	}
	return n[channel]
}

// eventuallyPS polls cond until it returns nil, failing after WaitTimeout.
func eventuallyPS(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(pubsubtest.WaitTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", pubsubtest.WaitTimeout, err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, bounded by deadline
	}
}

// publishRetry publishes until it succeeds (a failover or a slot move makes
// publishes fail for a while), with an idempotency key so that a publish
// that failed after storing is not stored twice.
func publishRetry(t *testing.T, b pubsub.Broker, room, data string) pubsub.PublishResult {
	t.Helper()
	deadline := time.Now().Add(pubsubtest.WaitTimeout)
	for {
		res, err := b.Publish(t.Context(), room, []byte(data), pubsub.PublishOptions{IdempotencyKey: data})
		if err == nil {
			return res
		}
		if !errors.Is(err, pubsub.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Publish(%q, %q): %v", room, data, err)
		}
		time.Sleep(20 * time.Millisecond) // retry interval, bounded by deadline
	}
}

// expectEach publishes one message to every room and waits for all of
// them, in any order across rooms.
func expectEach(t *testing.T, b pubsub.Broker, rec *pubsubtest.Recorder, tag string, rooms ...string) {
	t.Helper()
	want := map[string]uint64{}
	for _, room := range rooms {
		want[room] = publishRetry(t, b, room, tag+"-"+room).Seq
	}
	for len(want) > 0 {
		env := rec.Next(t)
		seq, ok := want[env.Room]
		if !ok || env.Seq > seq {
			t.Fatalf("unexpected delivery %+v; waiting for %v", env, want)
		}
		if env.Seq == seq {
			if string(env.Data) != tag+"-"+env.Room {
				t.Fatalf("delivery %+v, want data %q", env, tag+"-"+env.Room)
			}
			delete(want, env.Room)
		}
	}
}

func TestRedisClusterSubscriptionsFollowOwners(t *testing.T) {
	// Rooms on every master; each SSUBSCRIBE lands on the room's master,
	// none on another, and no classic subscription is made.
	t.Parallel()
	c := testutil.StartCluster(t, 3, 0)
	cc := newClusterClient(t, c)
	b, _ := newClusterBroker(t, cc)
	rec := pubsubtest.NewRecorder()
	var rooms []string
	for _, m := range c.Masters() {
		on, _ := roomsOn(t, c, m, "r-"+m+"-", 3)
		rooms = append(rooms, on...)
	}
	subscribeAll(t, b, rec, rooms...)
	for _, room := range rooms {
		ch := b.Keys().Channel(room)
		for _, m := range c.Masters() {
			want := int64(0)
			if m == c.MasterFor(room) {
				want = 1
			}
			if n := shardNumSub(t, c, m, ch); n != want {
				t.Errorf("%s: %d sharded subscribers on %s, want %d", room, n, m, want)
			}
			if n, err := c.Client(m).PubSubNumSub(t.Context(), ch).Result(); err != nil || n[ch] != 0 {
				t.Errorf("%s: classic subscribers on %s: %v, %v", room, m, n, err)
			}
		}
	}
	expectEach(t, b, rec, "x", rooms...)
	if err := b.Unsubscribe(t.Context(), rooms[0]); err != nil {
		t.Fatal(err)
	}
	eventuallyPS(t, func() error {
		if n := shardNumSub(t, c, c.MasterFor(rooms[0]), b.Keys().Channel(rooms[0])); n != 0 {
			return fmt.Errorf("%d subscribers after Unsubscribe", n)
		}
		return nil
	})
}

func TestRedisClusterClientKillResubscribes(t *testing.T) {
	// Redis drops the sharded subscription connection of a master that
	// holds rooms of several slots: go-redis's own resubscription (one
	// SSUBSCRIBE of every channel) fails with CROSSSLOT, so the broker must
	// resubscribe room by room.
	t.Parallel()
	c := testutil.StartCluster(t, 3, 0)
	cc := newClusterClient(t, c)
	b, _ := newClusterBroker(t, cc)
	rec := pubsubtest.NewRecorder()
	m := c.Masters()[0]
	on, off := roomsOn(t, c, m, "k", 4)
	subscribeAll(t, b, rec, append(on, off...)...)
	if err := b.Unsubscribe(t.Context(), on[3]); err != nil {
		t.Fatal(err)
	}
	expectEach(t, b, rec, "before", on[:3]...)

	if n, err := c.Client(m).ClientKillByFilter(t.Context(), "TYPE", "pubsub").Result(); err != nil || n != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub on %s: %d killed, %v", m, n, err)
	}
	rec.WaitReconnects(t, 1)
	expectEach(t, b, rec, "after", append(on[:3], off...)...)
	// The unsubscribed room stays unsubscribed across the reconnect.
	if _, err := b.Publish(t.Context(), on[3], []byte("gone"), pubsub.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	expectEach(t, b, rec, "marker", on[0])
	if n := shardNumSub(t, c, m, b.Keys().Channel(on[3])); n != 0 {
		t.Fatalf("unsubscribed room has %d subscribers after the reconnect", n)
	}
}

func TestRedisClusterSlotMigration(t *testing.T) {
	// A room's slot migrates to another master: Redis pushes sunsubscribe,
	// the broker subscribes on the new owner, reports a reconnect, and the
	// room's deliveries go on; the other rooms of the old master stay.
	t.Parallel()
	c := testutil.StartCluster(t, 3, 0)
	cc := newClusterClient(t, c)
	b, _ := newClusterBroker(t, cc)
	rec := pubsubtest.NewRecorder()
	masters := c.Masters()
	from, to := masters[0], masters[1]
	on, off := roomsOn(t, c, from, "m", 2)
	subscribeAll(t, b, rec, append(on, off...)...)
	expectEach(t, b, rec, "before", append(on, off...)...)

	moved := on[0]
	c.MigrateSlot(testutil.RoomSlot(moved), to)
	rec.WaitReconnects(t, 1)
	ch := b.Keys().Channel(moved)
	if n := shardNumSub(t, c, to, ch); n != 1 {
		t.Fatalf("%d subscribers of the moved room on its new master, want 1", n)
	}
	if n := shardNumSub(t, c, from, ch); n != 0 {
		t.Fatalf("%d subscribers of the moved room on its old master, want 0", n)
	}
	expectEach(t, b, rec, "after", append(on, off...)...)
}

func TestRedisClusterMasterFailover(t *testing.T) {
	// A master dies; its replica takes over its slots. The broker finds
	// the new owner of its rooms, subscribes there and reports a
	// reconnect; the rooms of the other masters never stop.
	t.Parallel()
	c := testutil.StartCluster(t, 3, 1)
	cc := newClusterClient(t, c)
	b, _ := newClusterBroker(t, cc)
	rec := pubsubtest.NewRecorder()
	victim := c.Masters()[0]
	on, off := roomsOn(t, c, victim, "f", 2)
	subscribeAll(t, b, rec, append(on, off...)...)
	expectEach(t, b, rec, "before", append(on, off...)...)

	c.Kill(victim)
	owner := c.WaitMasterFor(on[0], victim)
	rec.WaitReconnects(t, 1)
	eventuallyPS(t, func() error {
		for _, room := range on { // each room moves on its own
			if n := shardNumSub(t, c, owner, b.Keys().Channel(room)); n != 1 {
				return fmt.Errorf("%s: %d subscribers on the new master %s", room, n, owner)
			}
		}
		return nil
	})
	expectEach(t, b, rec, "after", append(on, off...)...)
}

func TestRedisClusterSubscribeTimesOutWhileDown(t *testing.T) {
	// A room whose master is down (no replica) cannot be subscribed:
	// Subscribe fails with ErrUnavailable when its context ends, and rolls
	// back; Publish fails with ErrUnavailable.
	t.Parallel()
	c := testutil.StartCluster(t, 3, 0)
	cc := newClusterClient(t, c)
	b, _ := newClusterBroker(t, cc)
	b.Register(pubsubtest.NewRecorder())
	victim := c.Masters()[0]
	on, _ := roomsOn(t, c, victim, "d", 1)
	c.Kill(victim)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if err := b.Subscribe(ctx, on[0]); !errors.Is(err, pubsub.ErrUnavailable) {
		t.Fatalf("Subscribe with the master down: %v, want ErrUnavailable", err)
	}
	if _, err := b.Publish(t.Context(), on[0], []byte("x"), pubsub.PublishOptions{}); !errors.Is(err, pubsub.ErrUnavailable) {
		t.Fatalf("Publish with the master down: %v, want ErrUnavailable", err)
	}
}

func TestRedisClusterChurnUnderFaults(t *testing.T) {
	// Rooms are subscribed and unsubscribed over and over while Redis
	// drops the subscription connections and a slot migrates. Every
	// Subscribe completes, no subscription outlives its Unsubscribe, and
	// afterwards every room delivers again.
	t.Parallel()
	c := testutil.StartCluster(t, 3, 0)
	cc := newClusterClient(t, c)
	b, _ := newClusterBroker(t, cc)
	rec := pubsubtest.NewRecorder()
	b.Register(rec)
	masters := c.Masters()
	var rooms []string
	for _, m := range masters {
		on, _ := roomsOn(t, c, m, "c-"+m+"-", 4)
		rooms = append(rooms, on...)
	}
	ctx, cancel := context.WithCancel(t.Context())
	errs := make(chan error, len(rooms))
	var cycles atomic.Int64
	for i, room := range rooms {
		go func() {
			var err error
			defer func() { errs <- err }()
			for k := 0; ctx.Err() == nil; k++ {
				sctx, scancel := context.WithTimeout(ctx, pubsubtest.WaitTimeout)
				err = b.Subscribe(sctx, room)
				scancel()
				if err != nil {
					if ctx.Err() != nil {
						err = nil
					} else {
						err = fmt.Errorf("Subscribe(%q) #%d: %w", room, k, err)
					}
					return
				}
				if (i+k)%3 == 0 {
					time.Sleep(time.Millisecond) // pacing: some rooms stay subscribed a while
				}
				if err = b.Unsubscribe(ctx, room); err != nil {
					return
				}
				cycles.Add(1)
			}
		}()
	}
	for round := range 3 {
		for _, m := range masters {
			if _, err := c.Client(m).ClientKillByFilter(t.Context(), "TYPE", "pubsub").Result(); err != nil {
				t.Fatal(err)
			}
		}
		if round == 1 {
			c.MigrateSlot(testutil.RoomSlot(rooms[0]), masters[1])
		}
		time.Sleep(200 * time.Millisecond) // pacing: churn between the faults
	}
	cancel()
	for range rooms {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, room := range rooms {
		if err := b.Unsubscribe(t.Context(), room); err != nil {
			t.Fatal(err)
		}
	}
	eventuallyPS(t, func() error {
		for _, room := range rooms {
			for _, m := range masters {
				if n := shardNumSub(t, c, m, b.Keys().Channel(room)); n != 0 {
					return fmt.Errorf("%s: %d subscribers on %s after its Unsubscribe", room, n, m)
				}
			}
		}
		return nil
	})
	t.Logf("%d Subscribe/Unsubscribe cycles", cycles.Load())
	subscribeAll(t, b, rec, rooms...)
	expectEach(t, b, rec, "after", rooms...)
	for _, room := range rooms {
		if n := shardNumSub(t, c, c.MasterFor(room), b.Keys().Channel(room)); n != 1 {
			t.Errorf("%s: %d subscribers on its master %s, want 1", room, n, c.MasterFor(room))
		}
	}
}

func TestRedisClusterHandleLostThenReconnect(t *testing.T) {
	// One master's sharded subscription connection is killed: HandleLost
	// once, then HandleReconnect once its rooms are proven back; the
	// rooms of the other masters never notice.
	t.Parallel()
	c := testutil.StartCluster(t, 3, 0)
	cc := newClusterClient(t, c)
	b, _ := newClusterBroker(t, cc)
	p := &lostProbe{Recorder: pubsubtest.NewRecorder(), hc: b}
	b.Register(p)
	m := c.Masters()[0]
	on, off := roomsOn(t, c, m, "l", 2)
	for _, room := range append(on, off...) {
		if err := b.Subscribe(t.Context(), room); err != nil {
			t.Fatal(err)
		}
	}
	expectEach(t, b, p.Recorder, "before", append(on, off...)...)
	if n, err := c.Client(m).ClientKillByFilter(t.Context(), "TYPE", "pubsub").Result(); err != nil || n != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub on %s: %d killed, %v", m, n, err)
	}
	p.WaitReconnects(t, 1)
	expectEach(t, b, p.Recorder, "after", append(on, off...)...)
	checkLostThenReconnect(t, p, 2)
}

// TestClusterSlot checks the slot function against the values the Redis
// documentation gives for CLUSTER KEYSLOT.
func TestClusterSlot(t *testing.T) {
	for key, want := range map[string]int{"somekey": 11058, "foo{hash_tag}": 2515, "bar{hash_tag}x": 2515} {
		if got := pubsub.ClusterSlot(key); got != want {
			t.Errorf("ClusterSlot(%q) = %d, want %d", key, got, want)
		}
	}
	if pubsub.ClusterSlot("{}x") == pubsub.ClusterSlot("x") {
		t.Error("an empty hash tag must not count as a tag")
	}
}
