package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/pkg/history"
)

// The subscriber engine: the receive side of both Redis brokers. A single
// Redis (or the master a Sentinel failover client follows) is a cluster of
// one shard; a Redis Cluster has one shard per master. They differ only in
// the command family (SUBSCRIBE or SSUBSCRIBE) and in the topology that
// says which server holds a room's channel.
//
// Rooms. Subscribe and Unsubscribe record what is wanted in the room's
// subRoom and kick its worker: a goroutine, one per room at a time, that
// runs syncRoom while the room has work. It resolves the room's server,
// attaches the room to that server's shard, writes the subscription and
// waits for its confirmation; it moves the room when its shard hands it
// back (a slot moved, a failover) and takes it off once unwanted. One
// worker per room orders the room's writes.
//
// Shards. A shardSub (shard.go) is one pub/sub connection to one server and
// the goroutine that reads it: it confirms, delivers, notices a lost
// connection, resubscribes its rooms itself and proves them back.
//
// Notices. A shard's loop calls LostHandler.HandleLost inline, once per
// outage. The notifier goroutine calls HandleReconnect, coalesced, after
// rooms that lost their subscription are proven back: at a shard's probe
// PONG, when a moved room is confirmed on its new server, and when a lost
// shard closes for want of rooms.
//
// Lock order. subscriber.mu guards the subscriber, every subRoom and the
// maps and flags of every shardSub. It is a leaf: nothing else is taken
// under it, and it is never held over I/O, a wait or a Handler call.
// go-redis's PubSub and RedisCluster's slot map reloader lock on their own,
// never under mu.
//
// Goroutines. All the engine's are counted in subscriber.wg and waited for
// by close: a loop per open shard, a worker per room with work, the
// notifier. Their waits end with ctx (ended by close) or with the PubSub's
// Close, which fails a pending read at once.

// pubSubber opens a pub/sub connection: a redis.UniversalClient (a single
// Redis, or a Sentinel failover client, whose PubSub redials the current
// master), or one master's *redis.Client of a ClusterClient.
type pubSubber interface {
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
}

// topology says which server holds a channel.
type topology interface {
	// owner returns the address of the server that holds channel now, and
	// its client: the same client for as long as the server stays.
	owner(ctx context.Context, channel string) (addr string, cl pubSubber, err error)
	// reload re-reads where channels live, returning when done or at ctx's
	// end; the engine calls it before resolving again after a failure.
	reload(ctx context.Context)
}

// oneServer is the topology of a single Redis: it holds every channel.
type oneServer struct{ client redis.UniversalClient }

func (t oneServer) owner(context.Context, string) (string, pubSubber, error) {
	return "redis", t.client, nil
}

func (oneServer) reload(context.Context) {}

// subscriberConfig configures a subscriber.
type subscriberConfig struct {
	keys    history.Keys
	topo    topology
	sharded bool // SSUBSCRIBE (Redis Cluster), not SUBSCRIBE
	// pin opens the shard of the topology's only server at once and keeps
	// it without rooms: its health is known before a join, and leaving the
	// last room costs no redial (single Redis).
	pin          bool
	pingInterval time.Duration // positive
	log          *slog.Logger
}

// subscriber is the engine. Its methods are safe for concurrent use; only
// healthy may be called from the Handler.
type subscriber struct {
	cfg          subscriberConfig
	write, unsub func(*redis.PubSub, context.Context, ...string) error // the command family
	subKind      string                                                // "subscribe" or "ssubscribe"
	unsubKind    string
	ctx          context.Context // ended by close: every background wait
	cancel       context.CancelFunc
	wg           sync.WaitGroup
	reconnectDue chan struct{} // capacity 1: HandleReconnect is due

	mu      sync.Mutex
	handler Handler
	rooms   map[string]*subRoom  // by channel: wanted, or with work pending
	shards  map[string]*shardSub // by server address: the current shard
	all     map[*shardSub]struct{}
	closed  bool
}

// subRoom is the subscription state of one room, guarded by subscriber.mu.
type subRoom struct {
	room, channel string

	wanted     bool          // Subscribe was called after the last Unsubscribe
	shard      *shardSub     // where the room is (being) subscribed; nil if none
	subscribed bool          // shard's connection last said of channel: subscribed
	confirmed  bool          // shard confirmed the subscription, and it is still live
	ready      chan struct{} // closed when confirmed; replaced when no longer
	waiting    int           // Subscribe calls waiting on ready
	working    bool          // a worker goroutine runs syncRoom
	again      bool          // the worker must look again after its pass
	stale      bool          // re-read the topology before the next attempt
	wasLive    bool          // it lost a live subscription: HandleReconnect is due once back
	lastErr    error         // why the worker's last attempt failed
}

// newSubscriber starts the engine under parent; close stops it.
func newSubscriber(parent context.Context, cfg subscriberConfig) *subscriber {
	ctx, cancel := context.WithCancel(parent)
	e := &subscriber{
		cfg: cfg, write: (*redis.PubSub).Subscribe, unsub: (*redis.PubSub).Unsubscribe,
		subKind: "subscribe", unsubKind: "unsubscribe",
		ctx: ctx, cancel: cancel, reconnectDue: make(chan struct{}, 1),
		rooms: make(map[string]*subRoom), shards: make(map[string]*shardSub), all: make(map[*shardSub]struct{}),
	}
	if cfg.sharded {
		e.write, e.unsub = (*redis.PubSub).SSubscribe, (*redis.PubSub).SUnsubscribe
		e.subKind, e.unsubKind = "ssubscribe", "sunsubscribe"
	}
	e.wg.Add(1)
	go e.notifier()
	if cfg.pin {
		addr, cl, _ := cfg.topo.owner(ctx, "")
		e.mu.Lock()
		e.openShardLocked(addr, cl, true)
		e.mu.Unlock()
	}
	return e
}

func (e *subscriber) register(h Handler) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.handler = h
}

func (e *subscriber) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// subscribe is both brokers' Subscribe (see Redis.Subscribe).
func (e *subscriber) subscribe(ctx context.Context, room string) error {
	channel := e.cfg.keys.Channel(room)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return fmt.Errorf("pubsub: subscribe %q: %w", room, ErrClosed)
	}
	r := e.rooms[channel]
	if r == nil {
		r = &subRoom{room: room, channel: channel, ready: make(chan struct{})}
		e.rooms[channel] = r
	}
	r.wanted = true
	if r.confirmed {
		e.mu.Unlock()
		return nil
	}
	e.kickLocked(r)
	ready := r.ready
	r.waiting++
	e.mu.Unlock()

	var err error
	select {
	case <-ready:
	case <-ctx.Done():
	case <-e.ctx.Done():
	}
	e.mu.Lock()
	r.waiting--
	switch {
	case e.closed:
		err = ErrClosed
	case r.confirmed || ctx.Err() == nil: // confirmed, perhaps just as ctx ended
	default:
		err = e.waitErr(ctx, r.lastErr)
		if r.waiting == 0 && r.wanted {
			// Roll back: no subscription is left behind for a join that failed.
			r.wanted = false
			e.kickLocked(r)
		}
	}
	e.forgetLocked(r)
	e.mu.Unlock()
	if err != nil {
		return fmt.Errorf("pubsub: subscribe %q: %w", room, err)
	}
	return nil
}

// unsubscribe is both brokers' Unsubscribe: deliveries of room stop when it
// returns (the loops drop what is in flight); the room's worker writes it.
func (e *subscriber) unsubscribe(room string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.rooms[e.cfg.keys.Channel(room)]
	if r == nil || !r.wanted {
		return nil
	}
	r.wanted, r.wasLive = false, false
	e.unconfirmLocked(r, false)
	e.kickLocked(r)
	return nil
}

// sync is both brokers' Sync: Redis answers a connection's commands in
// order, after the messages it already wrote to it, so the PONG of a token
// of our own on the room's shard comes after every delivery that was on
// its way. A room not subscribed has nothing on its way; one whose
// subscription is lost neither (HandleReconnect reports what the old
// connection held): sync returns once it is proven back.
func (e *subscriber) sync(ctx context.Context, room string) error {
	channel := e.cfg.keys.Channel(room)
	var lastErr error
	for attempt := 1; ; {
		e.mu.Lock()
		r := e.rooms[channel]
		if e.closed || r == nil || !r.wanted || !r.confirmed && !r.wasLive {
			closed := e.closed
			e.mu.Unlock()
			if closed {
				return fmt.Errorf("pubsub: sync %q: %w", room, ErrClosed)
			}
			return nil
		}
		var err error
		if r.confirmed {
			s := r.shard
			tok, w := s.addWaiterLocked("chat-sync-", "")
			lost := s.lostCh
			e.mu.Unlock()
			var ok bool
			if ok, err = s.awaitPong(ctx, tok, w, lost); ok {
				return nil
			}
		} else { // lost: wait until proven back; look again now and then (an Unsubscribe)
			ready := r.ready
			e.mu.Unlock()
			t := time.NewTimer(e.cfg.pingInterval)
			select {
			case <-ready:
			case <-t.C:
			case <-ctx.Done():
			case <-e.ctx.Done():
			}
			t.Stop()
		}
		if ctx.Err() != nil || e.ctx.Err() != nil {
			return fmt.Errorf("pubsub: sync %q: %w", room, e.waitErr(ctx, lastErr))
		}
		if err != nil && !errors.Is(err, errAwaitShard) { // the PING failed: the loop was told
			lastErr = err
			e.backoff(ctx, attempt)
			attempt++
		}
	}
}

// waitErr explains why a wait ended: close, or ctx with the last I/O error.
func (e *subscriber) waitErr(ctx context.Context, ioErr error) error {
	switch {
	case e.ctx.Err() != nil:
		return ErrClosed
	case ioErr == nil:
		return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	default:
		return fmt.Errorf("%w: %w (last error: %w)", ErrUnavailable, ctx.Err(), ioErr)
	}
}

// close closes every shard, stops the engine's goroutines and waits for
// them. It reports whether this call closed it. Deliveries stop, and no
// HandleReconnect follows.
func (e *subscriber) close() bool {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return false
	}
	e.closed = true
	shards := make([]*shardSub, 0, len(e.all))
	for s := range e.all {
		s.closed.Store(true)
		shards = append(shards, s)
	}
	clear(e.all)
	clear(e.shards)
	e.mu.Unlock()

	e.cancel()
	for _, s := range shards {
		s.closePubSub()
	}
	e.wg.Wait()
	return true
}

// kickLocked makes r's worker (re)consider r: it starts one, or tells the
// running one to look again after its current pass.
func (e *subscriber) kickLocked(r *subRoom) {
	if e.closed {
		return
	}
	if r.working {
		r.again = true
		return
	}
	r.working = true
	e.wg.Add(1)
	go e.work(r)
}

// forgetLocked drops r from the engine once nothing refers to it.
func (e *subscriber) forgetLocked(r *subRoom) {
	if !r.wanted && r.shard == nil && !r.working && r.waiting == 0 && e.rooms[r.channel] == r {
		delete(e.rooms, r.channel)
	}
}

// unconfirmLocked marks r as no longer live; lost says it was lost (not
// given up), so HandleReconnect is due once it is confirmed again.
func (e *subscriber) unconfirmLocked(r *subRoom, lost bool) {
	if !r.confirmed {
		return
	}
	r.confirmed = false
	r.ready = make(chan struct{})
	r.wasLive = r.wasLive || lost
}

// confirmLocked marks r as live and reports whether HandleReconnect is due.
func (e *subscriber) confirmLocked(r *subRoom) bool {
	if !r.confirmed {
		r.confirmed, r.lastErr = true, nil
		close(r.ready)
	}
	due := r.wasLive
	r.wasLive = false
	return due
}

// work is a room's worker: it runs syncRoom until no new request came in
// during the last pass.
func (e *subscriber) work(r *subRoom) {
	defer e.wg.Done()
	for {
		e.syncRoom(r)
		e.mu.Lock()
		if r.again && !e.closed {
			r.again = false
			e.mu.Unlock()
			continue
		}
		r.working = false
		e.forgetLocked(r)
		e.mu.Unlock()
		return
	}
}

// errAwaitShard says that the room's shard lost its connection: its loop
// resubscribes every room it holds (or hands them back to their workers).
var errAwaitShard = errors.New("the shard's connection is being restored")

// errShardGone says the shard was closed meanwhile: resolve again.
var errShardGone = errors.New("the shard closed")

// syncRoom brings r's subscription in line with r.wanted: confirmed on the
// server that holds its channel, or on none. It retries with backoff until
// that holds, the room's shard takes over, or close.
func (e *subscriber) syncRoom(r *subRoom) {
	for failures := 0; ; failures++ {
		if failures > 0 && !e.backoff(e.ctx, failures) {
			return
		}
		e.mu.Lock()
		r.again = false // this pass looks at the latest state
		wanted, cur, confirmed, stale := r.wanted, r.shard, r.confirmed, r.stale
		r.stale = false
		e.mu.Unlock()
		switch {
		case !wanted:
			if cur != nil {
				e.detach(r, cur)
			}
			return
		case confirmed:
			return
		}
		target, err := e.resolve(r.channel, stale || failures > 0)
		if err == nil {
			if cur != nil && cur != target {
				e.detach(r, cur)
			}
			var ok bool
			switch ok, err = target.subscribe(r); {
			case errors.Is(err, errAwaitShard), errors.Is(err, ErrClosed):
				return
			case ok: // the loop confirmed it at the PONG; the next pass checks
				failures = -1
				continue
			case err == nil:
				err = errors.New("not confirmed (MOVED, or an error reply)")
			}
		}
		// MOVED, or the server failed: the topology may be stale.
		e.cfg.log.Debug("subscription not confirmed; resolving the room's server again", "room", r.room, "err", err)
		e.mu.Lock()
		r.stale, r.lastErr = true, err
		e.mu.Unlock()
	}
}

// resolve returns the shard of the server that holds channel (opening it if
// needed), after re-reading the topology if fresh.
func (e *subscriber) resolve(channel string, fresh bool) (*shardSub, error) {
	if fresh {
		e.cfg.topo.reload(e.ctx)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	addr, cl, err := e.cfg.topo.owner(ctx, channel)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	if s := e.shards[addr]; s != nil && s.client == cl {
		return s, nil
	}
	// New, or go-redis replaced its client of that address (after dropping
	// the node from its map): the old shard's rooms move as they resolve.
	return e.openShardLocked(addr, cl, false), nil
}

// openShardLocked opens the shard of the server at addr and starts its loop.
func (e *subscriber) openShardLocked(addr string, cl pubSubber, pinned bool) *shardSub {
	s := newShardSub(e, addr, cl, pinned)
	e.shards[addr] = s
	e.all[s] = struct{}{}
	e.wg.Add(1)
	go s.loop()
	return s
}

// detach takes r off shard s and writes its unsubscription there, also
// after a slot move (answered MOVED): the write makes go-redis forget the
// channel, which it would subscribe again when it redials. On a lost
// connection the loop writes it before resubscribing (no write here waits
// for a dial). A shard left without rooms is closed, unless pinned.
func (e *subscriber) detach(r *subRoom, s *shardSub) {
	e.mu.Lock()
	if r.shard != s {
		e.mu.Unlock()
		return
	}
	r.shard = nil
	if r.wanted {
		e.unconfirmLocked(r, true)
	}
	delete(s.rooms, r.channel)
	closed, lost := s.closed.Load(), s.lost
	empty := len(s.rooms) == 0 && !closed && !s.pinned
	switch {
	case empty:
		s.closed.Store(true)
		delete(e.all, s)
		if e.shards[s.addr] == s {
			delete(e.shards, s.addr)
		}
	case lost:
		s.dropped[r.channel] = struct{}{}
	}
	e.mu.Unlock()
	switch {
	case empty:
		s.closePubSub()
		if lost {
			e.reconnectSoon() // its HandleLost needs its HandleReconnect
		}
	case !closed && !lost:
		ctx, cancel := context.WithTimeout(e.ctx, time.Second)
		defer cancel()
		if err := e.unsub(s.ps, ctx, r.channel); err != nil {
			s.suspect(err)
		}
	}
}

// backoff sleeps for the jittered backoff of the given attempt (1, 2, …),
// from about 50 ms up to about one second. It returns false when ctx ends
// or on close.
func (e *subscriber) backoff(ctx context.Context, attempt int) bool {
	d := min(50*time.Millisecond<<min(attempt-1, 5), time.Second)
	t := time.NewTimer(d/2 + rand.N(d/2+1))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-e.ctx.Done():
	}
	return false
}

// reconnectSoon makes the notifier call HandleReconnect: once for any
// number of calls before it gets to it, once more for a call while it runs.
func (e *subscriber) reconnectSoon() {
	select {
	case e.reconnectDue <- struct{}{}:
	default:
	}
}

// notifier calls HandleReconnect when due, off the loops and the workers.
func (e *subscriber) notifier() {
	defer e.wg.Done()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-e.reconnectDue:
		}
		e.mu.Lock()
		h := e.handler
		e.mu.Unlock()
		if h != nil {
			h.HandleReconnect()
		}
	}
}
