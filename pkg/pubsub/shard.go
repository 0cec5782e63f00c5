package pubsub

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// One shard of the subscriber engine (subscribe.go): the pub/sub
// connection to one server and the goroutine that reads it.
//
// Confirmation. go-redis returns from Subscribe or SSubscribe once the
// command is written, not once Redis processed it. Redis answers a
// connection's commands in order, so the room's worker then writes a PING
// with a token of its own and waits until the loop sees its PONG: by then
// Redis's answer to the subscription came. That answer may be an error
// (Cluster: MOVED, CLUSTERDOWN), so the loop keeps whether the
// connection's last word on each room's channel was a subscription
// (subRoom.subscribed), and the PONG confirms the room only if it was. A
// PING lost with its connection is sent again.
//
// Reconnects. go-redis redials a failed connection by itself and
// resubscribes it with ONE command naming every channel, which a cluster
// refuses (CROSSSLOT) once they span two slots. So the loop never relies on
// it: once it learns that the connection was lost (a failed read or health
// PING, a failed write reported through suspect, or Redis confirming a
// subscription nobody asked for again, which only a new connection does),
// it calls HandleLost, resubscribes every room itself and pings a probe.
// At the probe's PONG it confirms each room whose subscription Redis
// answered, hands the others back to their workers (they resolve the
// room's server again) and has HandleReconnect called. While the server
// stays unreachable, it re-reads the topology after each failed attempt
// and hands over every room whose channel has another owner (a Cluster
// failover). A Sentinel failover needs none of that: the failover client's
// PubSub redials whatever master the sentinels name.
//
// Slot moves. Redis 7 pushes sunsubscribe to a channel's subscribers when
// its slot migrates away: the loop hands the room to its worker, which
// subscribes it on the new owner.

// shardSub is the pub/sub connection to one server. Its maps and lost are
// guarded by subscriber.mu; lost is written only by loop, which reads it
// without the lock. ps is go-redis's, safe for concurrent calls, and read
// only by loop.
type shardSub struct {
	e      *subscriber
	addr   string
	client pubSubber // owned by the broker's client
	ps     *redis.PubSub
	log    *slog.Logger
	pinned bool // never closed for want of rooms; set at creation

	rooms     map[string]*subRoom     // by channel: rooms whose shard this is
	dropped   map[string]struct{}     // channels taken off while lost: unsubscribed at the resubscription
	waiters   map[string]*shardWaiter // by PING token
	nextTok   uint64
	lost      bool          // the connection was lost and is not restored yet
	lostCh    chan struct{} // closed (and replaced) when the connection is lost
	lostWhy   string
	lostSince time.Time

	closed    atomic.Bool  // set under subscriber.mu; read anywhere
	suspects  atomic.Bool  // a call failed: go-redis may have replaced the connection
	lastAlive atomic.Int64 // unix nanoseconds of the last successful read
}

// shardWaiter waits for the PONG of its token; ok says whether its
// channel's subscription had been confirmed by then.
type shardWaiter struct {
	channel string // "" for a Sync barrier: confirms nothing
	done    chan struct{}
	ok      bool
}

func newShardSub(e *subscriber, addr string, cl pubSubber, pinned bool) *shardSub {
	s := &shardSub{
		e:       e,
		addr:    addr,
		client:  cl,
		pinned:  pinned,
		ps:      cl.Subscribe(context.Background()), // no channel: no I/O yet
		log:     e.cfg.log.With("server", addr),
		rooms:   make(map[string]*subRoom),
		dropped: make(map[string]struct{}),
		waiters: make(map[string]*shardWaiter),
		lostCh:  make(chan struct{}),
	}
	s.alive()
	return s
}

func (s *shardSub) alive() { s.lastAlive.Store(time.Now().UnixNano()) }

func (s *shardSub) closePubSub() {
	if err := s.ps.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		s.log.Debug("closing a subscription connection", "err", err)
	}
}

// addWaiterLocked registers a waiter for a new token of prefix.
func (s *shardSub) addWaiterLocked(prefix, channel string) (string, *shardWaiter) {
	s.nextTok++
	tok := prefix + strconv.FormatUint(s.nextTok, 10)
	w := &shardWaiter{channel: channel, done: make(chan struct{})}
	s.waiters[tok] = w
	return tok, w
}

// awaitPong pings tok until the loop reports its PONG, and returns the
// waiter's verdict. It returns errAwaitShard when the connection is lost
// meanwhile (lost is its lostCh when w was added), ErrClosed on close, and
// the error of a failed PING (after reporting it to the loop) or ctx's.
func (s *shardSub) awaitPong(ctx context.Context, tok string, w *shardWaiter, lost <-chan struct{}) (bool, error) {
	e := s.e
	defer func() {
		e.mu.Lock()
		delete(s.waiters, tok)
		e.mu.Unlock()
	}()
	ticker := time.NewTicker(e.cfg.pingInterval)
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
			return false, ctx.Err()
		case <-e.ctx.Done():
			return false, ErrClosed
		}
	}
}

// subscribe attaches r to the shard, writes its subscription and waits for
// the confirmation. It returns false with errAwaitShard when the connection
// is lost meanwhile (the loop then takes over r), and false with another
// error or none when Redis did not confirm it (MOVED, a failed write).
func (s *shardSub) subscribe(r *subRoom) (bool, error) {
	e := s.e
	e.mu.Lock()
	if s.closed.Load() {
		e.mu.Unlock()
		return false, errShardGone
	}
	if r.shard != s {
		r.shard = s
		s.rooms[r.channel] = r
	}
	r.subscribed = false
	if s.lost {
		e.mu.Unlock()
		return false, errAwaitShard
	}
	tok, w := s.addWaiterLocked("chat-sub-", r.channel)
	lost := s.lostCh
	e.mu.Unlock()

	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	if err := e.write(s.ps, ctx, r.channel); err != nil {
		s.suspect(err)
		e.mu.Lock()
		delete(s.waiters, tok)
		e.mu.Unlock()
		return false, err
	}
	ok, err := s.awaitPong(ctx, tok, w, lost)
	if err != nil && e.ctx.Err() != nil {
		err = ErrClosed
	}
	return ok, err
}

// suspect records that a call on the PubSub failed: go-redis may have
// replaced the connection by a new one lacking the rooms. The loop treats
// it as lost. The PING wakes the loop if it waits on the new connection.
func (s *shardSub) suspect(err error) {
	if s.closed.Load() {
		return
	}
	s.suspects.Store(true)
	s.log.Debug("a call on the subscription connection failed", "err", err)
	ctx, cancel := context.WithTimeout(s.e.ctx, time.Second)
	err = s.ps.Ping(ctx)
	cancel()
	if err != nil { // that may have replaced the connection once more
		s.suspects.Store(true)
	}
}

// loop reads the shard's connection until the shard closes. It calls the
// Handler inline and waits on nothing else than Redis, its backoff, and a
// topology reload while the connection is lost.
func (s *shardSub) loop() {
	e := s.e
	defer e.wg.Done()
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
		if s.suspects.Swap(false) {
			lose("a call on the connection failed", nil)
		}
		if failures > 0 {
			if s.lost {
				s.handOverMoved()
			}
			if !e.backoff(e.ctx, failures) || s.closed.Load() {
				return
			}
		}
		if s.lost && probe == "" {
			probes++
			tok := "chat-probe-" + strconv.FormatUint(probes, 10)
			if err := s.resubscribe(tok); err != nil {
				if s.closed.Load() {
					return
				}
				s.suspects.Store(false) // this failure is the one that counts
				failures++
				continue
			}
			probe = tok
		}

		var msg any
		var err error
		if pinged {
			// A read that times out under a context deadline (unlike
			// ReceiveTimeout's) makes go-redis drop the connection.
			rctx, cancel := context.WithTimeout(ctx, e.cfg.pingInterval)
			msg, err = s.ps.Receive(rctx)
			cancel()
		} else {
			msg, err = s.ps.ReceiveTimeout(ctx, e.cfg.pingInterval)
		}
		if err != nil {
			if s.closed.Load() {
				return
			}
			var rerr redis.Error
			if errors.As(err, &rerr) {
				// An error answer (Cluster: MOVED, CLUSTERDOWN, CROSSSLOT
				// from go-redis's own resubscription): the rooms' states,
				// read at the PONGs, tell what failed.
				s.log.Debug("error reply on the subscription connection", "err", err)
				pinged = false
				s.alive()
				continue
			}
			if !pinged && isTimeout(err) {
				if probe != "" {
					// The probe's PONG went with a connection that go-redis
					// replaced unnoticed: resubscribe again.
					probe = ""
					continue
				}
				// Silence: make sure the connection is still alive.
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
		s.alive()
		if s.suspects.Swap(false) {
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
			if s.subscription(m) {
				lose("resubscribed by a new connection", nil)
			}
		}
	}
}

// markLost records that the connection's subscriptions are gone: every
// room of the shard waits for the resubscription. The first call of an
// outage logs it and calls HandleLost.
func (s *shardSub) markLost(why string, err error) {
	e := s.e
	e.mu.Lock()
	if s.closed.Load() {
		e.mu.Unlock()
		return
	}
	first := !s.lost
	if first {
		s.lost, s.lostWhy, s.lostSince = true, why, time.Now()
	}
	close(s.lostCh) // wakes the workers and syncs waiting for a PONG
	s.lostCh = make(chan struct{})
	for _, r := range s.rooms {
		r.subscribed = false
		if r.wanted {
			e.unconfirmLocked(r, true)
		}
	}
	h := e.handler
	e.mu.Unlock()
	if !first {
		return
	}
	s.log.Warn("subscription connection lost", "reason", why, "err", err)
	if lh, ok := h.(LostHandler); ok {
		lh.HandleLost()
	}
}

// resubscribe writes the unsubscriptions of the rooms taken off while lost
// (go-redis would subscribe them again at its next redial otherwise), a
// subscription per wanted room of the shard, then the probe PING.
func (s *shardSub) resubscribe(tok string) error {
	e := s.e
	channels, dropped := s.wanted(true)
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	if len(dropped) > 0 {
		// One command: go-redis forgets them all even if the write fails.
		// (Across slots, a cluster answers CROSSSLOT; but then go-redis's
		// own resubscription, which named them, failed likewise.)
		if err := e.unsub(s.ps, ctx, dropped...); err != nil {
			return err
		}
	}
	if e.cfg.sharded { // one SSUBSCRIBE per room: the rooms span slots
		for _, ch := range channels {
			if err := e.write(s.ps, ctx, ch); err != nil {
				return err
			}
		}
	} else if len(channels) > 0 { // one SUBSCRIBE of all
		if err := e.write(s.ps, ctx, channels...); err != nil {
			return err
		}
	}
	return s.ps.Ping(ctx, tok)
}

// wanted returns the channels of the shard's wanted rooms. With reset (a
// resubscription is on its way) it marks them not subscribed, and takes
// the channels dropped while lost.
func (s *shardSub) wanted(reset bool) (channels, dropped []string) {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	for ch, r := range s.rooms {
		if r.wanted {
			r.subscribed = r.subscribed && !reset
			channels = append(channels, ch)
		}
	}
	if reset {
		dropped = slices.Collect(maps.Keys(s.dropped))
		clear(s.dropped)
	}
	return channels, dropped
}

// restored ends an outage once the probe's PONG came: the rooms Redis
// resubscribed are live again, the others go back to their workers, and
// HandleReconnect is due.
func (s *shardSub) restored() {
	e := s.e
	e.mu.Lock()
	s.lost = false
	moved := 0
	for _, r := range s.rooms {
		if !r.wanted {
			continue
		}
		if r.subscribed {
			e.confirmLocked(r)
			continue
		}
		moved++
		r.stale = true
		e.kickLocked(r)
	}
	n := len(s.rooms)
	e.mu.Unlock()
	s.log.Info("subscription connection restored", "rooms", n, "moving", moved)
	e.reconnectSoon()
}

// handOverMoved re-reads the topology while the connection is lost and
// hands every room whose channel has another server now to its worker.
func (s *shardSub) handOverMoved() {
	e := s.e
	e.cfg.topo.reload(e.ctx)
	channels, _ := s.wanted(false)
	ctx, cancel := context.WithTimeout(e.ctx, time.Second)
	defer cancel()
	for _, ch := range channels {
		_, cl, err := e.cfg.topo.owner(ctx, ch)
		if err != nil || cl == s.client {
			continue
		}
		e.mu.Lock()
		if r := s.rooms[ch]; r != nil && r.wanted {
			r.stale = true
			e.kickLocked(r)
		}
		e.mu.Unlock()
	}
}

// pong completes the waiter of tok, if any, and confirms its room if Redis
// answered its subscription (here, so that no delivery that follows the
// PONG is dropped as unconfirmed).
func (s *shardSub) pong(tok string) {
	e := s.e
	e.mu.Lock()
	w := s.waiters[tok]
	if w == nil {
		e.mu.Unlock()
		return
	}
	delete(s.waiters, tok)
	var r *subRoom
	due := false
	if w.channel == "" {
		w.ok = !s.lost // a Sync barrier: proves nothing while lost
	} else {
		r = s.rooms[w.channel]
		w.ok = !s.lost && r != nil && r.subscribed
		if w.ok && r.wanted {
			due = e.confirmLocked(r)
		}
	}
	close(w.done)
	e.mu.Unlock()
	if due {
		s.log.Info("room subscription moved", "room", r.room)
		e.reconnectSoon()
	}
}

// subscription records a confirmation or an unsubscription. A sunsubscribe
// of a room held as subscribed is Redis telling that the slot moved. It
// reports whether Redis confirmed a subscription that was already
// confirmed with no write of it outstanding: only go-redis's own
// resubscription of a new connection does that.
func (s *shardSub) subscription(m *redis.Subscription) (replaced bool) {
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	r := s.rooms[m.Channel]
	if r == nil {
		return false // a room that left the shard, or go-redis's own resubscription
	}
	switch m.Kind {
	case e.subKind:
		replaced = !s.lost && r.subscribed && r.confirmed && !r.working
		r.subscribed = true
	case e.unsubKind:
		// Unless it answers an earlier unsubscription (the subscription
		// written since is answered next), the slot moved away.
		if r.subscribed && r.wanted {
			s.log.Info("slot moved away; moving the room's subscription", "room", r.room)
			e.unconfirmLocked(r, true)
			r.stale = true
			e.kickLocked(r)
		}
		r.subscribed = false
	}
	return replaced
}

// deliver hands one message to the Handler, unless its room is no longer
// subscribed here, or not yet confirmed again: until the PONG after a
// subscription, the connection may still carry messages of an earlier
// one, published while the room was unsubscribed (Unsubscribe promises
// none after it returns). What this drops of the new subscription was
// published before Subscribe returned (the caller reads the position
// after it), or before a move or a reconnect that HandleReconnect reports.
func (s *shardSub) deliver(m *redis.Message) {
	e := s.e
	e.mu.Lock()
	r, h := s.rooms[m.Channel], e.handler
	ok := r != nil && r.wanted && r.confirmed && r.subscribed
	e.mu.Unlock()
	if !ok || h == nil || s.closed.Load() {
		return
	}
	env, err := parsePayload(r.room, m.Payload)
	if err != nil {
		s.log.Error("dropped a malformed delivery", "room", r.room, "err", err)
		return
	}
	h.HandleMessage(env)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
