package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/pubsub"
	"example.com/chat/pkg/pubsub/pubsubtest"
)

// newClient returns a client of srv, closed at the end of the test (after
// the broker, since cleanups run last first).
func newClient(t *testing.T, srv *testutil.RedisServer) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:         srv.Addr(),
		DialTimeout:  time.Second,
		ReadTimeout:  2 * time.Second,
		WriteTimeout: 2 * time.Second,
		// Fail fast while Redis is down (the defaults retry for seconds).
		MaxRetries:    1,
		DialerRetries: 1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newRedisBroker returns a broker (closed at the end of the test) and its
// store under a prefix of the test's own.
func newRedisBroker(t *testing.T, c *redis.Client) (*pubsub.Redis, *history.Redis) {
	t.Helper()
	prefix := testutil.UniquePrefix(t)
	b := pubsub.NewRedis(pubsub.RedisConfig{
		Client:       c,
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
	return b, history.NewRedis(history.RedisConfig{Client: c, Prefix: prefix})
}

func TestRedisContract(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	pubsubtest.Run(t, func(t *testing.T) (pubsub.Broker, history.Store, pubsubtest.Resetter) {
		c := newClient(t, srv)
		b, st := newRedisBroker(t, c)
		reset := func(t *testing.T, room string) {
			k := b.Keys()
			if err := c.Del(t.Context(), k.Meta(room), k.Log(room)).Err(); err != nil {
				t.Fatalf("reset %q: %v", room, err)
			}
		}
		return b, st, reset
	})
}

// subscribeAll subscribes b to rooms and registers rec.
func subscribeAll(t *testing.T, b pubsub.Broker, rec *pubsubtest.Recorder, rooms ...string) {
	t.Helper()
	b.Register(rec)
	for _, room := range rooms {
		if err := b.Subscribe(t.Context(), room); err != nil {
			t.Fatalf("Subscribe(%q): %v", room, err)
		}
	}
}

// expectDelivery publishes to room and waits for that very message.
func expectDelivery(t *testing.T, b pubsub.Broker, rec *pubsubtest.Recorder, room, data string) pubsub.PublishResult {
	t.Helper()
	res, err := b.Publish(t.Context(), room, []byte(data), pubsub.PublishOptions{})
	if err != nil {
		t.Fatalf("Publish(%q): %v", room, err)
	}
	env := rec.Next(t)
	if env.Room != room || env.Seq != res.Seq || string(env.Data) != data {
		t.Fatalf("delivery %+v, want %q seq %d in %q", env, data, res.Seq, room)
	}
	return res
}

func TestRedisClientKillResubscribes(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	srv.RequireOwn()
	c := newClient(t, srv)
	b, _ := newRedisBroker(t, c)
	rec := pubsubtest.NewRecorder()
	subscribeAll(t, b, rec, "a", "b", "c")
	if err := b.Unsubscribe(t.Context(), "c"); err != nil {
		t.Fatal(err)
	}
	expectDelivery(t, b, rec, "a", "before")

	// What Redis does to a subscriber past client-output-buffer-limit.
	if n, err := c.ClientKillByFilter(t.Context(), "TYPE", "pubsub").Result(); err != nil || n != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub: %d killed, %v", n, err)
	}
	rec.WaitReconnects(t, 1)

	expectDelivery(t, b, rec, "a", "after a")
	expectDelivery(t, b, rec, "b", "after b")
	// "c" stays unsubscribed across the reconnect.
	if _, err := b.Publish(t.Context(), "c", []byte("gone"), pubsub.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	expectDelivery(t, b, rec, "b", "marker")
	if n := rec.Reconnects(); n != 1 {
		t.Fatalf("HandleReconnect called %d times, want 1", n)
	}
}

func TestRedisDownIsUnavailable(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	c := newClient(t, srv)
	b, st := newRedisBroker(t, c)
	rec := pubsubtest.NewRecorder()
	subscribeAll(t, b, rec, "a")
	srv.Kill()

	ctx, cancel := context.WithTimeout(t.Context(), pubsubtest.WaitTimeout)
	defer cancel()
	for _, opts := range []pubsub.PublishOptions{{}, {Ephemeral: true}} {
		_, err := b.Publish(ctx, "a", []byte("x"), opts)
		if !errors.Is(err, pubsub.ErrUnavailable) {
			t.Fatalf("Publish(%+v) with Redis down: %v, want ErrUnavailable", opts, err)
		}
	}
	if _, err := st.Recent(ctx, "a", 10); !errors.Is(err, history.ErrUnavailable) {
		t.Fatalf("Recent with Redis down: %v, want ErrUnavailable", err)
	}
	if _, err := st.Since(ctx, "a", "", 0, 10); !errors.Is(err, history.ErrUnavailable) {
		t.Fatalf("Since with Redis down: %v, want ErrUnavailable", err)
	}
	if _, err := st.Position(ctx, "a"); !errors.Is(err, history.ErrUnavailable) {
		t.Fatalf("Position with Redis down: %v, want ErrUnavailable", err)
	}
	sctx, scancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer scancel()
	if err := b.Subscribe(sctx, "b"); !errors.Is(err, pubsub.ErrUnavailable) {
		t.Fatalf("Subscribe with Redis down: %v, want ErrUnavailable", err)
	}
}

func TestRedisRestartRecovers(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	c := newClient(t, srv)
	b, st := newRedisBroker(t, c)
	rec := pubsubtest.NewRecorder()
	subscribeAll(t, b, rec, "a", "b")
	before := expectDelivery(t, b, rec, "a", "before")

	srv.Restart() // loses every key: the rooms get new epochs
	rec.WaitReconnects(t, 1)

	// The client's pooled connections died with the server; the first
	// commands may fail while go-redis replaces them.
	var after pubsub.PublishResult
	deadline := time.Now().Add(pubsubtest.WaitTimeout)
	for {
		res, err := b.Publish(t.Context(), "a", []byte("after"), pubsub.PublishOptions{})
		if err == nil {
			after = res
			break
		}
		if !errors.Is(err, pubsub.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Publish after restart: %v", err)
		}
	}
	if after.Seq != 1 || after.Epoch == before.Epoch {
		t.Fatalf("after restart: %+v, before %+v", after, before)
	}
	if env := rec.Next(t); env.Seq != 1 || env.Epoch != after.Epoch || string(env.Data) != "after" {
		t.Fatalf("delivery after restart: %+v", env)
	}
	expectDelivery(t, b, rec, "b", "b after")
	p, err := st.Since(t.Context(), "a", before.Epoch, before.Seq, 10)
	if err != nil || !p.Truncated || len(p.Entries) != 1 {
		t.Fatalf("Since the old epoch: %+v, %v", p, err)
	}
}

func TestRedisSubscribeConfirmedUnderLoad(t *testing.T) {
	// Subscribe must not return before Redis processed the SUBSCRIBE, even
	// with many rooms subscribing at once on the shared connection.
	t.Parallel()
	srv := testutil.StartRedis(t)
	c := newClient(t, srv)
	b, _ := newRedisBroker(t, c)
	rec := pubsubtest.NewRecorder()
	b.Register(rec)
	const rooms = 50
	errs := make(chan error, rooms)
	for i := range rooms {
		go func() {
			room := fmt.Sprintf("r%d", i)
			if err := b.Subscribe(t.Context(), room); err != nil {
				errs <- err
				return
			}
			_, err := b.Publish(t.Context(), room, []byte(room), pubsub.PublishOptions{})
			errs <- err
		}()
	}
	for range rooms {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for range rooms {
		env := rec.Next(t)
		if env.Seq != 1 || string(env.Data) != env.Room || seen[env.Room] {
			t.Fatalf("delivery %+v", env)
		}
		seen[env.Room] = true
	}
}

func TestRedisSilentConnectionIsReplaced(t *testing.T) {
	// A connection that stops answering (a network partition, a stuck
	// server) shows no error: the health PING finds it out.
	t.Parallel()
	srv := testutil.StartRedis(t)
	srv.RequireOwn()
	c := newClient(t, srv)
	b, _ := newRedisBroker(t, c) // PingInterval 500 ms: found out within 1 s
	rec := pubsubtest.NewRecorder()
	subscribeAll(t, b, rec, "a")
	if err := c.Do(t.Context(), "CLIENT", "PAUSE", "3000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	rec.WaitReconnects(t, 1)
	expectDelivery(t, b, rec, "a", "after")
}

// TestRotateKeepsLogAndKeys moves a room to a new epoch (history.Rotator)
// and checks that its log and seq counter carry on, and that an
// idempotency key of the old epoch still names its message.
func TestRotateKeepsLogAndKeys(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	b, st := newRedisBroker(t, newClient(t, srv))
	ctx := context.Background()
	first, err := b.Publish(ctx, "r", []byte("one"), pubsub.PublishOptions{IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, "r", []byte("two"), pubsub.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	epoch, err := st.Rotate(ctx, "r", first.Epoch)
	if err != nil || epoch == "" || epoch == first.Epoch {
		t.Fatalf("Rotate = %q, %v; want a new epoch (old %q)", epoch, err, first.Epoch)
	}
	// A second node that saw the same regression rotates nothing more.
	if again, err := st.Rotate(ctx, "r", first.Epoch); err != nil || again != epoch {
		t.Fatalf("second Rotate = %q, %v; want %q", again, err, epoch)
	}
	page, err := st.Since(ctx, "r", first.Epoch, 2, 10)
	if err != nil || !page.Truncated || page.Position != (history.Position{Epoch: epoch, Seq: 2}) || len(page.Entries) != 2 {
		t.Fatalf("Since in the old epoch = %+v, %v; want truncated, both entries, position %s:2", page, err, epoch)
	}
	dup, err := b.Publish(ctx, "r", []byte("one"), pubsub.PublishOptions{IdempotencyKey: "k1"})
	if err != nil || !dup.Duplicate || dup.Seq != 1 || dup.Epoch != epoch {
		t.Fatalf("retry of k1 = %+v, %v; want duplicate of seq 1 in %s", dup, err, epoch)
	}
	next, err := b.Publish(ctx, "r", []byte("three"), pubsub.PublishOptions{IdempotencyKey: "k3"})
	if err != nil || next.Seq != 3 || next.Epoch != epoch {
		t.Fatalf("next publish = %+v, %v; want seq 3 in %s", next, err, epoch)
	}
	if got, err := st.Rotate(ctx, "none", "x"); err != nil || got != "" {
		t.Fatalf("Rotate of a room without a log = %q, %v", got, err)
	}
}

// lostProbe is a Recorder that also records, at each HandleLost, what the
// broker's Healthy said: Healthy takes the broker's lock, so a HandleLost
// called under it would deadlock the test.
type lostProbe struct {
	*pubsubtest.Recorder
	hc pubsub.HealthChecker

	mu           sync.Mutex
	healthAtLost []error
}

func (p *lostProbe) HandleLost() {
	err := p.hc.Healthy()
	p.mu.Lock()
	p.healthAtLost = append(p.healthAtLost, err)
	p.mu.Unlock()
	p.Recorder.HandleLost()
}

// checkLostThenReconnect fails unless p saw exactly one HandleLost, first,
// with Healthy reporting the subscription down, and then a HandleReconnect
// (reconnects of them at least, at most max).
func checkLostThenReconnect(t *testing.T, p *lostProbe, max int) {
	t.Helper()
	got := p.Notices()
	if len(got) < 2 || len(got) > 1+max || got[0] != "lost" || slices.Contains(got[1:], "lost") {
		t.Fatalf("notices %v; want lost, then 1 to %d reconnects", got, max)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.healthAtLost) != 1 || !errors.Is(p.healthAtLost[0], pubsub.ErrSubscriptionDown) {
		t.Fatalf("Healthy at HandleLost: %v; want ErrSubscriptionDown", p.healthAtLost)
	}
}

func TestRedisHandleLostThenReconnect(t *testing.T) {
	// A killed subscriber connection: HandleLost as soon as the receive
	// loop notices, HandleReconnect once the room is proven back, and
	// deliveries go on.
	t.Parallel()
	srv := testutil.StartRedis(t)
	srv.RequireOwn()
	c := newClient(t, srv)
	b, _ := newRedisBroker(t, c)
	p := &lostProbe{Recorder: pubsubtest.NewRecorder(), hc: b}
	b.Register(p)
	if err := b.Subscribe(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	expectDelivery(t, b, p.Recorder, "a", "before")
	if n, err := c.ClientKillByFilter(t.Context(), "TYPE", "pubsub").Result(); err != nil || n != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub: %d killed, %v", n, err)
	}
	p.WaitReconnects(t, 1)
	expectDelivery(t, b, p.Recorder, "a", "after")
	checkLostThenReconnect(t, p, 1)
}

func TestRedisUnsubscribeWhileLost(t *testing.T) {
	// A room left while the subscription connection is lost stays left:
	// go-redis, which redials by itself, must not subscribe it again.
	t.Parallel()
	srv := testutil.StartRedis(t)
	srv.RequireOwn()
	c := newClient(t, srv)
	b, _ := newRedisBroker(t, c) // PingInterval 500 ms: lost within about 1 s
	rec := pubsubtest.NewRecorder()
	subscribeAll(t, b, rec, "a", "b")
	srv.Pause()
	rec.WaitLost(t, 1)
	if err := b.Unsubscribe(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	srv.Resume()
	rec.WaitReconnects(t, 1)
	expectDelivery(t, b, rec, "a", "after")
	ch := b.Keys().Channel("b")
	eventuallyPS(t, func() error {
		n, err := c.PubSubNumSub(t.Context(), ch).Result()
		if err != nil || n[ch] != 0 {
			return fmt.Errorf("PUBSUB NUMSUB of the room left: %v, %v", n, err)
		}
		return nil
	})
}
