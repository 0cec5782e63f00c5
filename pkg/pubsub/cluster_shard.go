package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The subscriber side of Redis Cluster: one shardSub per master.
//
// Confirmation. As in Redis (see redis_subscribe.go), SSUBSCRIBE is
// followed by a PING with a token of the caller's; Redis answers a
// connection's commands in order, so when the token's PONG comes, the
// answer to the SSUBSCRIBE came before it. Unlike a single Redis, that
// answer may be an error (MOVED: the slot is elsewhere; CLUSTERDOWN), so
// the loop keeps, per channel, what the connection last said about it
// (states), and the PONG confirms the subscription only if that is
// "ssubscribe".
//
// Reconnects. go-redis redials a failed connection by itself and
// resubscribes it with ONE SSUBSCRIBE of every channel it knows, which a
// cluster refuses (CROSSSLOT) as soon as they span two slots. So the loop
// never relies on it: once it learns that the connection was lost (a failed
// read or health ping, or a failed write reported by anyone through
// suspect), it resubscribes every room of the shard itself, one SSUBSCRIBE
// per room, pings a probe, and when the probe's PONG comes confirms each
// room whose SSUBSCRIBE was answered, hands the others back to their
// workers (they re-resolve the slot's master), and has HandleReconnect
// called. While the master stays unreachable the loop re-reads the slot map
// after each failed attempt and hands over every room whose slot has a new
// owner (a failover).
//
// Slot moves. Redis 7 pushes sunsubscribe to a channel's subscribers when
// its slot migrates away; for a room the shard holds as subscribed, the
// loop hands it to its worker, which subscribes it on the new owner.

// chanState is what a shard's connection last said about a channel.
type chanState uint8

const (
	chanPending      chanState = iota // SSUBSCRIBE written, no answer yet (or an error answer)
	chanSubscribed                    // ssubscribe confirmation
	chanUnsubscribed                  // sunsubscribe (answer or push)
)

// shardSub is the sharded subscription connection to one master. Its maps
// and flags are guarded by RedisCluster.mu.
type shardSub struct {
	b      *RedisCluster
	addr   string
	client *redis.Client // go-redis's client of the master; owned by the ClusterClient
	ps     *redis.PubSub
	log    *slog.Logger

	rooms    map[string]*clusterRoom // by channel: rooms whose shard this is
	states   map[string]chanState    // by channel, for the rooms
	waiters  map[string]*shardWaiter // by PING token
	nextTok  uint64
	lost     bool          // the connection was lost and is not restored yet
	lostCh   chan struct{} // closed (and replaced) when the connection is lost
	suspects bool          // a call failed: go-redis may have replaced the connection
	closed   bool
}

// shardWaiter waits for the PONG of its token; ok says whether its
// channel's SSUBSCRIBE had been confirmed by then.
type shardWaiter struct {
	channel string
	done    chan struct{}
	ok      bool
}

func newShardSub(b *RedisCluster, addr string, cl *redis.Client) *shardSub {
	return &shardSub{
		b:       b,
		addr:    addr,
		client:  cl,
		ps:      cl.SSubscribe(context.Background()), // no channel: no I/O yet
		log:     b.log.With("master", addr),
		rooms:   make(map[string]*clusterRoom),
		states:  make(map[string]chanState),
		waiters: make(map[string]*shardWaiter),
		lostCh:  make(chan struct{}),
	}
}

func (s *shardSub) closePubSub() {
	if err := s.ps.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		s.log.Debug("closing a shard subscription", "err", err)
	}
}

// subscribe attaches r to the shard, writes its SSUBSCRIBE and waits for
// the confirmation. It returns false with errAwaitShard when the connection
// is lost meanwhile (the loop then takes over r), and false with another
// error or none when Redis did not confirm it (MOVED, a failed write).
func (s *shardSub) subscribe(r *clusterRoom) (bool, error) {
	b := s.b
	b.mu.Lock()
	if s.closed {
		b.mu.Unlock()
		return false, errShardGone
	}
	if r.shard != s {
		r.shard = s
		s.rooms[r.channel] = r
	}
	s.states[r.channel] = chanPending
	if s.lost {
		b.mu.Unlock()
		return false, errAwaitShard
	}
	s.nextTok++
	tok := "chat-ssub-" + strconv.FormatUint(s.nextTok, 10)
	w := &shardWaiter{channel: r.channel, done: make(chan struct{})}
	s.waiters[tok] = w
	lost := s.lostCh
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(s.waiters, tok)
		b.mu.Unlock()
	}()

	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if err := s.ps.SSubscribe(ctx, r.channel); err != nil {
		s.suspect(err)
		return false, err
	}
	ticker := time.NewTicker(b.cfg.PingInterval)
	defer ticker.Stop()
	for {
		if err := s.ps.Ping(ctx, tok); err != nil {
			s.suspect(err)
			return false, err
		}
		select {
		case <-w.done:
			return w.ok, nil
		case <-lost:
			return false, errAwaitShard
		case <-ticker.C: // a safety net: pinging again is harmless
		case <-ctx.Done():
			if b.ctx.Err() != nil {
				return false, ErrClosed
			}
			return false, ctx.Err()
		}
	}
}

// suspect records that a call on the PubSub failed: go-redis may have
// replaced the connection by a new one lacking the rooms. The loop treats
// it as lost. The PING wakes the loop if it waits on the new connection.
func (s *shardSub) suspect(err error) {
	b := s.b
	b.mu.Lock()
	if s.closed {
		b.mu.Unlock()
		return
	}
	s.suspects = true
	b.mu.Unlock()
	s.log.Debug("a call on the subscription connection failed", "err", err)
	ctx, cancel := context.WithTimeout(b.ctx, time.Second)
	err = s.ps.Ping(ctx)
	cancel()
	if err != nil { // that may have replaced the connection once more
		b.mu.Lock()
		s.suspects = !s.closed
		b.mu.Unlock()
	}
}

// loop reads the shard's connection until the shard closes. It calls the
// Handler inline and waits on nothing else than Redis, its backoff, and a
// slot map reload while the connection is lost.
func (s *shardSub) loop() {
	b := s.b
	defer b.wg.Done()
	ctx := context.Background() // reads have deadlines; closing the PubSub fails them
	var (
		probe    string // token of the PING ending a resubscription; "" if unsent
		pinged   bool   // a health PING is unanswered
		failures int    // consecutive failures, for the backoff
		probes   uint64
	)
	lose := func(why string, err error) {
		probe, pinged = "", false
		s.markLost(why, err)
	}
	for {
		if s.isClosed() {
			return
		}
		if s.takeSuspect() {
			lose("a call on the connection failed", nil)
		}
		if failures > 0 {
			if s.isLost() {
				s.handOverMoved()
			}
			if !b.backoff(failures) {
				return
			}
		}
		if s.isLost() && probe == "" {
			probes++
			tok := "chat-probe-" + strconv.FormatUint(probes, 10)
			if err := s.resubscribe(tok); err != nil {
				if s.isClosed() {
					return
				}
				s.takeSuspect()
				failures++
				continue
			}
			probe = tok
		}

		var msg any
		var err error
		if pinged {
			// A read that times out under a context deadline makes go-redis
			// drop the connection (see Redis.receiveLoop).
			rctx, cancel := context.WithTimeout(ctx, b.cfg.PingInterval)
			msg, err = s.ps.Receive(rctx)
			cancel()
		} else {
			msg, err = s.ps.ReceiveTimeout(ctx, b.cfg.PingInterval)
		}
		if err != nil {
			if s.isClosed() {
				return
			}
			var rerr redis.Error
			if errors.As(err, &rerr) {
				// An error answer to an SSUBSCRIBE (MOVED, CROSSSLOT from
				// go-redis's own resubscription, CLUSTERDOWN): the
				// channels' states, read at the PONGs, tell what failed.
				s.log.Debug("error reply on the subscription connection", "err", err)
				pinged = false
				continue
			}
			if !pinged && isTimeout(err) {
				if probe != "" {
					// The probe's PONG went with a connection that go-redis
					// replaced unnoticed: resubscribe again.
					probe = ""
					continue
				}
				if err := s.ps.Ping(ctx); err != nil {
					lose("ping failed", err)
					failures++
					continue
				}
				pinged = true
				continue
			}
			lose("receive failed", err)
			failures++
			continue
		}
		failures, pinged = 0, false
		if s.takeSuspect() {
			lose("a call on the connection failed", nil)
		}

		switch m := msg.(type) {
		case *redis.Message:
			s.deliver(m)
		case *redis.Pong:
			if probe != "" && m.Payload == probe {
				probe = ""
				s.restored()
				continue
			}
			s.pong(m.Payload)
		case *redis.Subscription:
			s.subscription(m)
		}
	}
}

func (s *shardSub) isClosed() bool {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	return s.closed
}

func (s *shardSub) isLost() bool {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	return s.lost
}

func (s *shardSub) takeSuspect() bool {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	was := s.suspects
	s.suspects = false
	return was
}

// markLost records that the connection's subscriptions are gone: every
// room of the shard waits for the resubscription.
func (s *shardSub) markLost(why string, err error) {
	b := s.b
	b.mu.Lock()
	first, h := !s.lost, b.handler
	defer func() {
		b.mu.Unlock()
		if lh, ok := h.(LostHandler); ok && first {
			lh.HandleLost()
		}
	}()
	if first {
		s.log.Warn("shard subscription connection lost", "reason", why, "err", err)
	}
	s.lost = true
	close(s.lostCh) // wakes the workers waiting for a PONG
	s.lostCh = make(chan struct{})
	for ch, r := range s.rooms {
		s.states[ch] = chanPending
		if r.wanted {
			b.unconfirmLocked(r, true)
		}
	}
}

// resubscribe writes an SSUBSCRIBE per room of the shard, then the probe
// PING.
func (s *shardSub) resubscribe(tok string) error {
	b := s.b
	b.mu.Lock()
	channels := make([]string, 0, len(s.rooms))
	for ch, r := range s.rooms {
		if r.wanted {
			s.states[ch] = chanPending
			channels = append(channels, ch)
		}
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	for _, ch := range channels {
		if err := s.ps.SSubscribe(ctx, ch); err != nil {
			return err
		}
	}
	return s.ps.Ping(ctx, tok)
}

// restored ends an outage once the probe's PONG came: the rooms Redis
// resubscribed are live again, the others go back to their workers.
func (s *shardSub) restored() {
	b := s.b
	b.mu.Lock()
	s.lost = false
	due, moved := false, 0
	for ch, r := range s.rooms {
		if !r.wanted {
			continue
		}
		if s.states[ch] == chanSubscribed {
			if b.confirmLocked(r) {
				due = true
			}
			continue
		}
		moved++
		r.stale = true
		b.kickLocked(r)
	}
	n := len(s.rooms)
	b.mu.Unlock()
	s.log.Info("shard subscription connection restored", "rooms", n, "moving", moved)
	// Always: a HandleLost (markLost) is answered by a HandleReconnect,
	// even for a shard whose rooms all moved or left meanwhile.
	_ = due
	b.reconnectSoon()
}

// handOverMoved re-reads the slot map while the connection is lost and
// hands every room whose slot has another master now to its worker.
func (s *shardSub) handOverMoved() {
	b := s.b
	b.reloadState()
	b.mu.Lock()
	channels := make([]string, 0, len(s.rooms))
	for ch, r := range s.rooms {
		if r.wanted {
			channels = append(channels, ch)
		}
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(b.ctx, time.Second)
	defer cancel()
	for _, ch := range channels {
		cl, err := b.client.MasterForKey(ctx, ch)
		if err != nil || cl == s.client {
			continue
		}
		b.mu.Lock()
		if r := s.rooms[ch]; r != nil && r.wanted {
			r.stale = true
			b.kickLocked(r)
		}
		b.mu.Unlock()
	}
}

// pong completes the waiter of tok, if any, and confirms its room if Redis
// answered its SSUBSCRIBE (here, so that no delivery that follows the
// PONG is dropped as unconfirmed).
func (s *shardSub) pong(tok string) {
	b := s.b
	b.mu.Lock()
	w := s.waiters[tok]
	if w == nil {
		b.mu.Unlock()
		return
	}
	delete(s.waiters, tok)
	w.ok = !s.lost && s.states[w.channel] == chanSubscribed
	due := false
	r := s.rooms[w.channel]
	if w.ok && r != nil && r.wanted {
		due = b.confirmLocked(r)
	}
	close(w.done)
	b.mu.Unlock()
	if due {
		s.log.Info("room subscription moved", "room", r.room)
		b.reconnectSoon()
	}
}

// subscription records a confirmation or an unsubscription. A sunsubscribe
// of a room held as subscribed is Redis telling that the slot moved.
func (s *shardSub) subscription(m *redis.Subscription) {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	r := s.rooms[m.Channel]
	if r == nil {
		return // a room that left the shard, or go-redis's own resubscription
	}
	switch m.Kind {
	case "ssubscribe":
		s.states[m.Channel] = chanSubscribed
	case "sunsubscribe":
		switch s.states[m.Channel] {
		case chanSubscribed:
			s.states[m.Channel] = chanUnsubscribed
			if r.wanted {
				s.log.Info("slot moved away; moving the room's subscription", "room", r.room)
				b.unconfirmLocked(r, true)
				r.stale = true
				b.kickLocked(r)
			}
		case chanPending:
			// The answer to an earlier SUNSUBSCRIBE; the SSUBSCRIBE written
			// since is answered next.
		}
	}
}

// deliver hands one message to the Handler, unless its room is no longer
// subscribed here, or not yet confirmed again: until the PONG after an
// SSUBSCRIBE, the connection may still carry messages of an earlier
// subscription, published while the room was unsubscribed (Unsubscribe
// promises none after it returns). What this drops of the new subscription
// was published before Subscribe returned (the caller reads the position
// after it), or before a move or a reconnect that HandleReconnect reports.
func (s *shardSub) deliver(m *redis.Message) {
	b := s.b
	b.mu.Lock()
	r, h := s.rooms[m.Channel], b.handler
	ok := r != nil && r.wanted && r.confirmed && !s.closed && s.states[m.Channel] == chanSubscribed
	b.mu.Unlock()
	if !ok || h == nil {
		return
	}
	env, err := parsePayload(r.room, m.Payload)
	if err != nil {
		s.log.Error("dropped a malformed delivery", "room", r.room, "err", err)
		return
	}
	h.HandleMessage(env)
}

var _ Syncer = (*RedisCluster)(nil)

// Sync implements Syncer: a PING on the shard connection of room's master
// is answered after every delivery already written to it. A room not
// confirmed on a live shard has nothing on the way to wait for (its
// deliveries are being lost, and HandleReconnect follows).
func (b *RedisCluster) Sync(ctx context.Context, room string) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return fmt.Errorf("pubsub: sync %q: %w", room, ErrClosed)
	}
	r := b.rooms[b.keys.Channel(room)]
	if r == nil || r.shard == nil || !r.confirmed || r.shard.lost {
		b.mu.Unlock()
		return nil
	}
	s := r.shard
	s.nextTok++
	tok := "chat-sync-" + strconv.FormatUint(s.nextTok, 10)
	w := &shardWaiter{done: make(chan struct{})} // no channel: confirms nothing
	s.waiters[tok] = w
	lost := s.lostCh
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(s.waiters, tok)
		b.mu.Unlock()
	}()
	ticker := time.NewTicker(b.cfg.PingInterval)
	defer ticker.Stop()
	for {
		if err := s.ps.Ping(ctx, tok); err != nil {
			s.suspect(err)
			return fmt.Errorf("pubsub: sync %q: %w: %w", room, ErrUnavailable, err)
		}
		select {
		case <-w.done:
			return nil
		case <-lost:
			return nil
		case <-ticker.C:
		case <-ctx.Done():
			return fmt.Errorf("pubsub: sync %q: %w: %w", room, ErrUnavailable, ctx.Err())
		case <-b.ctx.Done():
			return fmt.Errorf("pubsub: sync %q: %w", room, ErrClosed)
		}
	}
}
