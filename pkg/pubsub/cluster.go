package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/pkg/history"
)

var (
	_ Broker    = (*RedisCluster)(nil)
	_ Submitter = (*RedisCluster)(nil)
)

// RedisClusterConfig configures a Redis Cluster broker.
type RedisClusterConfig struct {
	// Client is the connection to the cluster. Required. The broker opens
	// one sharded subscription connection per master (through the
	// client's per-node clients); it never closes the client: its owner
	// does, after the broker's Close.
	Client *redis.ClusterClient
	// Prefix is the deployment's key and channel prefix (see history.Keys).
	// The history.Redis reading the logs must use the same one. Empty means
	// history.DefaultPrefix.
	Prefix string
	// HistorySize, HistoryTTL and IdempotencyTTL are as in RedisConfig.
	HistorySize    int
	HistoryTTL     time.Duration
	IdempotencyTTL time.Duration
	// PingInterval is how long a subscription connection may stay silent
	// before the broker pings its master, and how long it then waits for
	// the answer before it reconnects. Zero means three seconds.
	PingInterval time.Duration
	// MinReplicas and ReplicaTimeout are as in RedisConfig; the WAIT goes
	// to the room's master, on the connection that ran the script.
	MinReplicas    int
	ReplicaTimeout time.Duration
	// Logger receives connection lifecycle events and malformed
	// deliveries. Nil discards them.
	Logger *slog.Logger
}

// RedisCluster is the Broker for nodes sharing a Redis Cluster (Redis 7 or
// later). Every key and the channel of a room carry the hash tag {room}, so
// a room lives in one slot, on one master: the publish script (the one
// Redis runs, with SPUBLISH instead of PUBLISH) runs there, and the message
// travels by sharded pub/sub only within that master's shard.
//
// Subscriptions. go-redis pins a sharded subscription connection to one
// node, so the broker keeps one connection per master (a shardSub, read by
// a goroutine of its own) and routes each room's SSUBSCRIBE to the master
// that owns the room's slot. A subscription is confirmed by a PING round
// trip after it, as in Redis, and only if Redis answered the SSUBSCRIBE
// itself (not MOVED).
//
// Moves. A room leaves its master when Redis says the slot moved (it pushes
// sunsubscribe when the slot migrates away, or answers a resubscription
// with MOVED) or when the master stops answering and the cluster's slot map
// names another owner (a failover). A per-room worker then re-reads the
// slot map, subscribes on the new owner, and once that is confirmed the
// broker calls Handler.HandleReconnect, so that the hub fills from history
// what was published in between. A lost connection to a master that still
// owns its slots is re-established and resubscribed by its shardSub, also
// followed by HandleReconnect.
type RedisCluster struct {
	client *redis.ClusterClient
	keys   history.Keys
	cfg    RedisClusterConfig
	log    *slog.Logger

	ctx    context.Context // ended by Close: every background wait
	cancel context.CancelFunc
	wg     sync.WaitGroup // shard loops, room workers, the reloader, the notifier, the lanes' batchers

	reconnectDue chan struct{} // capacity 1: HandleReconnect is due
	reload       stateReloader
	lanes        [clusterLanes]chan *publishReq // publishes waiting for their lane's batcher

	// mu guards the broker, every clusterRoom and every shardSub's maps.
	mu      sync.Mutex
	handler Handler
	rooms   map[string]*clusterRoom // by channel: wanted, or with work pending
	shards  map[string]*shardSub    // by master address: the current shard
	all     map[*shardSub]struct{}  // every open shard, current or not
	closed  bool
}

// clusterRoom is the subscription state of one room. Its fields are
// guarded by RedisCluster.mu.
type clusterRoom struct {
	room    string
	channel string

	wanted    bool          // Subscribe was called after the last Unsubscribe
	shard     *shardSub     // where the room is (being) subscribed; nil if none
	confirmed bool          // shard confirmed the subscription, and it is still live
	ready     chan struct{} // closed when confirmed; replaced when no longer
	waiting   int           // Subscribe calls waiting on ready
	working   bool          // a worker goroutine runs syncRoom
	again     bool          // the worker must look again after its pass
	stale     bool          // re-read the slot map before the next attempt
	wasLive   bool          // it lost a live subscription: HandleReconnect is due once back
}

// NewRedisCluster returns a broker on cfg.Client. Close stops it.
func NewRedisCluster(cfg RedisClusterConfig) *RedisCluster {
	log := redisDefaults(&cfg.HistorySize, &cfg.HistoryTTL, &cfg.IdempotencyTTL, &cfg.PingInterval, cfg.Logger)
	ctx, cancel := context.WithCancel(context.Background())
	b := &RedisCluster{
		client:       cfg.Client,
		keys:         history.NewKeys(cfg.Prefix),
		cfg:          cfg,
		log:          log.With("component", "pubsub"),
		ctx:          ctx,
		cancel:       cancel,
		reconnectDue: make(chan struct{}, 1),
		rooms:        make(map[string]*clusterRoom),
		shards:       make(map[string]*shardSub),
		all:          make(map[*shardSub]struct{}),
	}
	b.wg.Add(1)
	go b.notifier()
	for i := range b.lanes {
		b.lanes[i] = make(chan *publishReq, maxPublishBatch)
		b.wg.Add(1)
		go b.batchLane(b.lanes[i])
	}
	return b
}

// Keys returns the layout the broker writes.
func (b *RedisCluster) Keys() history.Keys { return b.keys }

// Register implements Broker.
func (b *RedisCluster) Register(h Handler) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.handler = h
}

// shardedPublishScript is publishScript with SPUBLISH: the message goes to
// the subscribers of the room's shard only. Its keys and the channel share
// the room's slot, so the script runs whole on the room's master.
var shardedPublishScript = redis.NewScript(shardedPublishSource())

func shardedPublishSource() string {
	const from, to = "redis.call('PUBLISH',", "redis.call('SPUBLISH',"
	if strings.Count(publishSource, from) != 1 {
		panic("pubsub: the publish script no longer has exactly one PUBLISH")
	}
	return strings.Replace(publishSource, from, to, 1)
}

// Publish implements Broker: Submit, then Wait. The script runs on the
// master that owns the room's slot (go-redis routes EVALSHA by its first
// key, following MOVED and ASK). While the slot migrates, Redis may answer
// TRYAGAIN: the publish then fails with ErrUnavailable and the sender
// retries.
func (b *RedisCluster) Publish(ctx context.Context, room string, data []byte, opts PublishOptions) (PublishResult, error) {
	return b.Submit(ctx, room, data, opts).Wait(ctx)
}

// Submit implements Submitter: the publish joins the queue of its room's
// lane (cluster_batch.go), in the caller's goroutine, so the order of
// Submit calls is the order of the room's log.
func (b *RedisCluster) Submit(ctx context.Context, room string, data []byte, opts PublishOptions) *Pending {
	if b.isClosed() {
		return Completed(PublishResult{}, fmt.Errorf("pubsub: publish %q: %w", room, ErrClosed))
	}
	r := newPublishReq(ctx, b.keys, room, data, opts, b.cfg.HistorySize, b.cfg.HistoryTTL, b.cfg.IdempotencyTTL, b.ctx.Done())
	r.enqueue(b.lanes[laneOf(room)], b.ctx.Done())
	return &r.Pending
}

// failed asks go-redis to re-read the slot map after a command failed for
// another reason than a Redis error reply (MOVED already does): go-redis
// otherwise keeps sending a dead master's slots to it until its periodic
// reload, a minute later, and a failover would go unnoticed by publishers.
func (b *RedisCluster) failed(err error) {
	var rerr redis.Error
	if errors.As(err, &rerr) && !strings.HasPrefix(err.Error(), "CLUSTERDOWN") {
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	b.client.ReloadState(b.ctx) // lazy: one reload in the background
}

// Subscribe implements Broker. It returns once the master that owns the
// room's slot confirmed the subscription, or with an error wrapping
// ErrUnavailable when ctx ends first (the subscription is then rolled
// back, unless another Subscribe of the room still waits). A room already
// confirmed returns at once.
func (b *RedisCluster) Subscribe(ctx context.Context, room string) error {
	channel := b.keys.Channel(room)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return fmt.Errorf("pubsub: subscribe %q: %w", room, ErrClosed)
	}
	r := b.rooms[channel]
	if r == nil {
		r = &clusterRoom{room: room, channel: channel, ready: make(chan struct{})}
		b.rooms[channel] = r
	}
	r.wanted = true
	if r.confirmed {
		b.mu.Unlock()
		return nil
	}
	b.kickLocked(r)
	ready := r.ready
	r.waiting++
	b.mu.Unlock()

	var err error
	select {
	case <-ready:
	case <-ctx.Done():
		err = fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	case <-b.ctx.Done():
		err = ErrClosed
	}

	b.mu.Lock()
	r.waiting--
	switch {
	case err == nil:
	case b.closed:
		err = ErrClosed
	case r.confirmed:
		err = nil // confirmed just as ctx ended
	case r.waiting == 0 && r.wanted:
		// Roll back: no subscription is left behind for a join that failed.
		r.wanted = false
		b.kickLocked(r)
	}
	b.forgetLocked(r)
	b.mu.Unlock()
	if err != nil {
		return fmt.Errorf("pubsub: subscribe %q: %w", room, err)
	}
	return nil
}

// Unsubscribe implements Broker. Deliveries of room stop when it returns
// (the receive loops drop what is still in flight); the SUNSUBSCRIBE is
// written by the room's worker. It returns nil, also after Close.
func (b *RedisCluster) Unsubscribe(ctx context.Context, room string) error {
	channel := b.keys.Channel(room)
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.rooms[channel]
	if r == nil || !r.wanted {
		return nil
	}
	r.wanted, r.wasLive = false, false
	b.unconfirmLocked(r, false)
	b.kickLocked(r)
	return nil
}

// Close implements Broker. It closes every subscription connection, stops
// the broker's goroutines and waits for them; it does not close the Client.
func (b *RedisCluster) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	shards := make([]*shardSub, 0, len(b.all))
	for s := range b.all {
		s.closed = true
		shards = append(shards, s)
	}
	clear(b.all)
	clear(b.shards)
	b.mu.Unlock()

	b.cancel()
	for _, s := range shards {
		s.closePubSub()
	}
	b.wg.Wait()
	return nil
}

func (b *RedisCluster) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// kickLocked makes r's worker (re)consider r: it starts one, or tells the
// running one to look again after its current pass.
func (b *RedisCluster) kickLocked(r *clusterRoom) {
	if b.closed {
		return
	}
	if r.working {
		r.again = true
		return
	}
	r.working = true
	b.wg.Add(1)
	go b.work(r)
}

// forgetLocked drops r from the broker once nothing refers to it.
func (b *RedisCluster) forgetLocked(r *clusterRoom) {
	if !r.wanted && r.shard == nil && !r.working && r.waiting == 0 && b.rooms[r.channel] == r {
		delete(b.rooms, r.channel)
	}
}

// unconfirmLocked marks r as no longer live; lost says it was lost (not
// given up), so HandleReconnect is due once it is confirmed again.
func (b *RedisCluster) unconfirmLocked(r *clusterRoom, lost bool) {
	if !r.confirmed {
		return
	}
	r.confirmed = false
	r.ready = make(chan struct{})
	if lost {
		r.wasLive = true
	}
}

// confirmLocked marks r as live and reports whether HandleReconnect is due.
func (b *RedisCluster) confirmLocked(r *clusterRoom) bool {
	if !r.confirmed {
		r.confirmed = true
		close(r.ready)
	}
	due := r.wasLive
	r.wasLive = false
	return due
}

// work is a room's worker: it runs syncRoom until no new request came in
// during the last pass.
func (b *RedisCluster) work(r *clusterRoom) {
	defer b.wg.Done()
	for {
		b.syncRoom(r)
		b.mu.Lock()
		if r.again && !b.closed {
			r.again = false
			b.mu.Unlock()
			continue
		}
		r.working = false
		b.forgetLocked(r)
		b.mu.Unlock()
		return
	}
}

// errAwaitShard says that the room's shard lost its connection: its loop
// resubscribes every room it holds (or hands them back to their workers).
var errAwaitShard = errors.New("the shard's connection is being restored")

// errShardGone says the shard was closed meanwhile: resolve again.
var errShardGone = errors.New("the shard closed")

// syncRoom brings r's subscription in line with r.wanted: confirmed on the
// master that owns its slot, or on none. It retries with backoff until
// that holds, the room's shard takes over, or Close.
func (b *RedisCluster) syncRoom(r *clusterRoom) {
	failures := 0
	for {
		if failures > 0 && !b.backoff(failures) {
			return
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return
		}
		r.again = false // this pass looks at the latest state
		wanted, cur, confirmed, stale := r.wanted, r.shard, r.confirmed, r.stale
		r.stale = false
		b.mu.Unlock()

		if !wanted {
			if cur != nil {
				b.detach(r, cur)
			}
			return
		}
		if confirmed {
			return
		}
		target, err := b.owner(r.channel, stale || failures > 0)
		if err != nil {
			b.log.Debug("cannot resolve the room's master", "room", r.room, "err", err)
			failures++
			continue
		}
		if cur != nil && cur != target {
			b.detach(r, cur)
		}
		ok, err := target.subscribe(r)
		switch {
		case errors.Is(err, errAwaitShard), errors.Is(err, ErrClosed):
			return
		case ok:
			// The loop confirmed it at the PONG; the next pass checks.
			failures = 0
		default:
			// MOVED, or the master failed: the slot map is stale.
			b.log.Debug("subscription not confirmed; resolving the room's master again", "room", r.room, "master", target.addr, "err", err)
			b.mu.Lock()
			r.stale = true
			b.mu.Unlock()
			failures++
		}
	}
}

// owner returns the shard of the master that owns channel's slot, after
// re-reading the slot map if fresh.
func (b *RedisCluster) owner(channel string, fresh bool) (*shardSub, error) {
	if fresh {
		b.reloadState()
	}
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	cl, err := b.client.MasterForKey(ctx, channel)
	if err != nil {
		return nil, err
	}
	return b.shardFor(cl)
}

// shardFor returns the shard of the master client cl, opening it if needed.
func (b *RedisCluster) shardFor(cl *redis.Client) (*shardSub, error) {
	addr := cl.Options().Addr
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	if s := b.shards[addr]; s != nil && s.client == cl {
		return s, nil
	}
	// New, or go-redis replaced its client of that address (after dropping
	// the node from its map): the old shard's rooms move as they resolve.
	s := newShardSub(b, addr, cl)
	b.shards[addr] = s
	b.all[s] = struct{}{}
	b.wg.Add(1)
	go s.loop()
	return s, nil
}

// detach takes r off shard s, unsubscribing it there if s still serves it.
// A shard left without rooms is closed.
func (b *RedisCluster) detach(r *clusterRoom, s *shardSub) {
	b.mu.Lock()
	if r.shard != s {
		b.mu.Unlock()
		return
	}
	r.shard = nil
	if r.wanted {
		b.unconfirmLocked(r, true)
	}
	state := s.states[r.channel]
	delete(s.rooms, r.channel)
	delete(s.states, r.channel)
	empty := len(s.rooms) == 0 && !s.closed
	if empty {
		s.closed = true
		delete(b.all, s)
		if b.shards[s.addr] == s {
			delete(b.shards, s.addr)
		}
	}
	// Redis answers SUNSUBSCRIBE with MOVED once the slot is gone, and a
	// lost connection holds no subscription: write it only when it counts.
	write := !empty && !s.closed && !s.lost && state != chanUnsubscribed
	b.mu.Unlock()
	if empty {
		s.closePubSub()
		return
	}
	if write {
		ctx, cancel := context.WithTimeout(b.ctx, time.Second)
		err := s.ps.SUnsubscribe(ctx, r.channel)
		cancel()
		if err != nil {
			s.suspect(err)
		}
	}
}

// backoff sleeps for the jittered backoff of the given attempt (1, 2, …),
// from about 50 ms up to about one second. It returns false on Close.
func (b *RedisCluster) backoff(attempt int) bool {
	d := min(50*time.Millisecond<<min(attempt-1, 5), time.Second)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.ctx.Done():
		return false
	}
}

// reconnectSoon makes the notifier call Handler.HandleReconnect (once for
// any number of calls made before it gets to it).
func (b *RedisCluster) reconnectSoon() {
	select {
	case b.reconnectDue <- struct{}{}:
	default:
	}
}

// notifier calls HandleReconnect when due, off the receive loops and the
// room workers, so that many rooms moving at once cost one call or a few.
func (b *RedisCluster) notifier() {
	defer b.wg.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.reconnectDue:
		}
		b.mu.Lock()
		h := b.handler
		b.mu.Unlock()
		if h != nil {
			h.HandleReconnect()
		}
	}
}

// stateReloader coalesces re-reads of the cluster's slot map: a caller
// waits for a reload that starts after its request, shared by every caller
// that asked meanwhile.
type stateReloader struct {
	mu      sync.Mutex
	next    chan struct{} // closed when the next reload is done; nil if none is asked for
	running bool
}

// reloadState re-reads the slot map (CLUSTER SLOTS) into the client, and
// waits for it, up to Close.
func (b *RedisCluster) reloadState() {
	rl := &b.reload
	rl.mu.Lock()
	if rl.next == nil {
		rl.next = make(chan struct{})
	}
	done := rl.next
	if !rl.running {
		rl.running = true
		b.wg.Add(1) // callers are broker goroutines: the group is not empty
		go b.reloader()
	}
	rl.mu.Unlock()
	select {
	case <-done:
	case <-b.ctx.Done():
	}
}

func (b *RedisCluster) reloader() {
	defer b.wg.Done()
	rl := &b.reload
	for {
		rl.mu.Lock()
		done := rl.next
		rl.next = nil
		if done == nil {
			rl.running = false
			rl.mu.Unlock()
			return
		}
		rl.mu.Unlock()
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		// ForEachMaster reloads the slot map synchronously before it runs
		// (ReloadState only schedules a reload).
		err := b.client.ForEachMaster(ctx, func(context.Context, *redis.Client) error { return nil })
		cancel()
		if err != nil {
			b.log.Debug("cluster slot map reload failed", "err", err)
		}
		close(done)
	}
}
