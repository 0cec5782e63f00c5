// Package presence tracks who is in which room across the cluster. Each node
// records the (room, user) pairs it hosts, each with an expiry that the node
// refreshes by heartbeat, so the users of a crashed node disappear within one
// TTL. A user with several devices, on one node or several, counts once.
//
// Join and Leave report whether the user was present elsewhere, which lets
// the hub announce a join or leave only when the user's presence really
// changes: no leave/join flicker when a client reconnects to another node.
package presence

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Store records presence. Implementations are safe for concurrent use.
type Store interface {
	// Join records user in room on node until now+ttl and reports whether
	// the user was already present in the room (on any node).
	Join(ctx context.Context, room, user, node string, ttl time.Duration) (wasPresent bool, err error)
	// Leave removes user's record on node and reports whether the user is
	// still present in the room on another node.
	Leave(ctx context.Context, room, user, node string) (stillPresent bool, err error)
	// Refresh sets node's records of users in room to expire at now+ttl,
	// creating any that are missing.
	Refresh(ctx context.Context, room, node string, users []string, ttl time.Duration) error
	// List returns the distinct users present in room, sorted, at most
	// limit of them (limit <= 0: none), and their total count.
	List(ctx context.Context, room string, limit int) (users []string, count int, err error)
	// ActiveUsers returns the number of distinct users present in any room
	// of the cluster.
	ActiveUsers(ctx context.Context) (int, error)
}

var _ Store = (*Memory)(nil)

// Memory is the single-node Store.
type Memory struct {
	mu    sync.Mutex
	rooms map[string]map[string]map[string]time.Time // room -> user -> node -> expiry
	now   func() time.Time
}

// NewMemory returns an empty Memory; now nil means time.Now.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{rooms: make(map[string]map[string]map[string]time.Time), now: now}
}

// liveLocked reports whether user has an unexpired record in room other
// than on node skip. m.mu must be held.
func (m *Memory) liveLocked(room, user, skip string) bool {
	now := m.now()
	for n, exp := range m.rooms[room][user] {
		if n != skip && exp.After(now) {
			return true
		}
	}
	return false
}

// Join implements Store.
func (m *Memory) Join(_ context.Context, room, user, node string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	was := m.liveLocked(room, user, "")
	r := m.rooms[room]
	if r == nil {
		r = make(map[string]map[string]time.Time)
		m.rooms[room] = r
	}
	if r[user] == nil {
		r[user] = make(map[string]time.Time)
	}
	r[user][node] = m.now().Add(ttl)
	return was, nil
}

// Leave implements Store.
func (m *Memory) Leave(_ context.Context, room, user, node string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if u := m.rooms[room][user]; u != nil {
		delete(u, node)
		if len(u) == 0 {
			delete(m.rooms[room], user)
		}
	}
	if len(m.rooms[room]) == 0 {
		delete(m.rooms, room)
	}
	return m.liveLocked(room, user, ""), nil
}

// Refresh implements Store.
func (m *Memory) Refresh(_ context.Context, room, node string, users []string, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	exp := m.now().Add(ttl)
	r := m.rooms[room]
	if r == nil && len(users) > 0 {
		r = make(map[string]map[string]time.Time)
		m.rooms[room] = r
	}
	for _, u := range users {
		if r[u] == nil {
			r[u] = make(map[string]time.Time)
		}
		r[u][node] = exp
	}
	return nil
}

// List implements Store.
func (m *Memory) List(_ context.Context, room string, limit int) ([]string, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var users []string
	for u := range m.rooms[room] {
		if m.liveLocked(room, u, "") {
			users = append(users, u)
		}
	}
	sort.Strings(users)
	n := len(users)
	if limit <= 0 {
		return nil, n, nil
	}
	if len(users) > limit {
		users = users[:limit]
	}
	return users, n, nil
}

// ActiveUsers implements Store.
func (m *Memory) ActiveUsers(context.Context) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := make(map[string]bool)
	for room, users := range m.rooms {
		for u := range users {
			if m.liveLocked(room, u, "") {
				seen[u] = true
			}
		}
	}
	return len(seen), nil
}
