package hub

import (
	"context"
	"time"

	"example.com/chat/api"
)

// presenceJoin counts b's user in b's room; the user's first local session
// records it in the presence store and, if the user was not present on any
// node, announces the join. A user returning within the leave grace causes
// no event at all.
//
// Join calls presenceCount before the session's writer may run (the
// writer's end uncounts the user, which must find it counted), and
// presenceJoin, which does the I/O, after.
func (h *Hub) presenceJoin(ctx context.Context, b *sub, first bool) {
	if !first {
		return
	}
	s, r := b.s, b.room
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	was, err := h.cfg.Presence.Join(ctx, r.name, s.user, h.cfg.NodeID, h.cfg.PresenceTTL)
	if err != nil {
		s.log.Warn("presence join failed; the heartbeat will record it", "err", err)
		return
	}
	if !was {
		h.publishEvent(r.name, s.user, api.Kind_KIND_JOIN)
	}
}

// presenceCount counts s's user in its room and reports whether this is
// the user's first local session there, not returning within the leave
// grace: the join that presenceJoin records and announces.
func (h *Hub) presenceCount(b *sub) (first bool) {
	s, r := b.s, b.room
	r.mu.Lock()
	if r.users == nil {
		r.users = make(map[string]int)
	}
	n := r.users[s.user]
	r.users[s.user]++
	r.mu.Unlock()
	returning := false
	key := leaveKey{r.name, s.user}
	h.leavingMu.Lock()
	if t := h.leaving[key]; t != nil {
		delete(h.leaving, key)
		if t.Stop() {
			h.wg.Done()
		}
		returning = true
	}
	h.leavingMu.Unlock()
	return n == 0 && !returning
}

// presenceLeave uncounts s's user; when it was the user's last local
// session, the leave waits out the grace period.
func (h *Hub) presenceLeave(b *sub) {
	s, r := b.s, b.room
	r.mu.Lock()
	r.users[s.user]--
	last := r.users[s.user] <= 0
	if last {
		delete(r.users, s.user)
	}
	r.mu.Unlock()
	if !last {
		return
	}
	key := leaveKey{r.name, s.user}
	h.leavingMu.Lock()
	defer h.leavingMu.Unlock()
	if h.closed.Load() {
		return // presenceShutdown lets the records run out
	}
	if old := h.leaving[key]; old != nil && old.Stop() {
		h.wg.Done()
	}
	h.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(h.cfg.LeaveGrace, func() {
		defer h.wg.Done()
		h.leavingMu.Lock()
		mine := h.leaving[key] == t
		if mine {
			delete(h.leaving, key)
		}
		h.leavingMu.Unlock()
		if !mine {
			return // the user came back meanwhile
		}
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.PublishTimeout)
		defer cancel()
		still, err := h.cfg.Presence.Leave(ctx, key.room, key.user, h.cfg.NodeID)
		if err != nil {
			h.log.Warn("presence leave failed; the record will expire", "room", key.room, "user", key.user, "err", err)
			return
		}
		if !still {
			h.publishEvent(key.room, key.user, api.Kind_KIND_LEAVE)
		}
	})
	h.leaving[key] = t
}

// leaveKey names a user in a room.
type leaveKey struct{ room, user string }

// presentUsers returns, by room, the users this node holds presence
// records for: those with sessions and those whose leave is pending. With
// stopLeaves, the pending leaves are cancelled.
func (h *Hub) presentUsers(stopLeaves bool) map[string][]string {
	byRoom := make(map[string][]string)
	h.leavingMu.Lock()
	for k, t := range h.leaving {
		byRoom[k.room] = append(byRoom[k.room], k.user)
		if stopLeaves {
			if t.Stop() {
				h.wg.Done()
			}
			delete(h.leaving, k)
		}
	}
	h.leavingMu.Unlock()
	for _, r := range h.rooms() {
		r.mu.Lock()
		for u := range r.users {
			byRoom[r.name] = append(byRoom[r.name], u)
		}
		r.mu.Unlock()
	}
	return byRoom
}

// presenceShutdown runs when the node drains: pending leaves are dropped and
// every local record is set to expire after the leave grace, so users who
// reconnect elsewhere in time never flicker, and the others disappear.
func (h *Hub) presenceShutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.PublishTimeout)
	defer cancel()
	for room, users := range h.presentUsers(true) {
		if err := h.cfg.Presence.Refresh(ctx, room, h.cfg.NodeID, users, h.cfg.LeaveGrace); err != nil {
			h.log.Warn("presence refresh at shutdown failed", "room", room, "err", err)
		}
	}
}

// heartbeat refreshes this node's presence records every third of their
// TTL, so they outlive the node only by that TTL.
func (h *Hub) heartbeat() {
	defer h.wg.Done()
	t := time.NewTicker(h.cfg.PresenceTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-h.bg.Done():
			return
		case <-t.C:
		}
		for room, users := range h.presentUsers(false) {
			ctx, cancel := context.WithTimeout(h.bg, h.cfg.PublishTimeout)
			if err := h.cfg.Presence.Refresh(ctx, room, h.cfg.NodeID, users, h.cfg.PresenceTTL); err != nil {
				h.log.Warn("presence heartbeat failed", "room", room, "err", err)
			}
			cancel()
		}
	}
}

// Presence returns the users present in room across the cluster (at most
// limit, sorted) and their count.
func (h *Hub) Presence(ctx context.Context, room string, limit int) ([]string, int, error) {
	room, err := NormalizeRoom(room)
	if err != nil {
		return nil, 0, err
	}
	users, n, err := h.cfg.Presence.List(ctx, room, limit)
	if err != nil {
		return nil, 0, &Error{Kind: KindUnavailable, Msg: "presence is unavailable; retry", Err: err}
	}
	return users, n, nil
}
