package access

import (
	"context"
	"slices"
	"strings"
	"sync"
)

// MaxConversations is how many conversations a user's list keeps: the
// most recent. Older ones drop out of the list (not out of the rooms).
const MaxConversations = 1000

// Memory is the Store of a single node without Redis. It is bounded by
// the rooms and users the node's clients create, each user's list by
// MaxConversations.
type Memory struct {
	// hasLog reports whether a room has a log (it cannot become private).
	hasLog func(room string) bool

	mu    sync.Mutex
	rooms map[string]*memRecord
	users map[string]map[string]int64  // user -> room -> last activity (ms)
	marks map[string]map[string]Marker // user -> room -> read marker
}

type memRecord struct {
	kind    Kind
	owner   string
	members map[string]bool
}

// NewMemory returns an empty Store. hasLog, when not nil, tells whether a
// room already has messages (such a room cannot be made private).
func NewMemory(hasLog func(room string) bool) *Memory {
	return &Memory{hasLog: hasLog, rooms: make(map[string]*memRecord), users: make(map[string]map[string]int64), marks: make(map[string]map[string]Marker)}
}

var _ Store = (*Memory)(nil)

// Check implements Store.
func (m *Memory) Check(ctx context.Context, room, user string) (Decision, error) {
	if KindOfName(room) == Personal {
		return Decision{Kind: Personal, Member: PersonalRoom(user) == room}, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return decide(room, m.rooms[room], user), nil
}

// decide applies the rules to a room's record (nil: none).
func decide(room string, r *memRecord, user string) Decision {
	switch {
	case r == nil && KindOfName(room) == Direct:
		return Decision{Kind: Direct} // not started: nobody's
	case r == nil:
		return Decision{Kind: Public, Member: true}
	}
	return Decision{Kind: r.kind, Member: r.members[user], Owner: r.owner}
}

// CreatePrivate implements Store.
func (m *Memory) CreatePrivate(ctx context.Context, room, owner string) error {
	if KindOfName(room) != Public {
		return ErrReserved
	}
	if m.hasLog != nil && m.hasLog(room) {
		return ErrExists
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rooms[room] != nil {
		return ErrExists
	}
	m.rooms[room] = &memRecord{kind: Private, owner: owner, members: map[string]bool{owner: true}}
	return nil
}

// AddMember implements Store.
func (m *Memory) AddMember(ctx context.Context, room, by, user string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.ownedLocked(room, by)
	if err != nil {
		return err
	}
	r.members[user] = true
	return nil
}

// RemoveMember implements Store.
func (m *Memory) RemoveMember(ctx context.Context, room, by, user string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.ownedLocked(room, by)
	if err != nil {
		return err
	}
	if user == r.owner {
		return ErrForbidden
	}
	delete(r.members, user)
	delete(m.users[user], room)
	return nil
}

func (m *Memory) ownedLocked(room, by string) (*memRecord, error) {
	r := m.rooms[room]
	switch {
	case r == nil || r.kind != Private:
		return nil, ErrNotFound
	case r.owner != by:
		return nil, ErrForbidden
	}
	return r, nil
}

// Members implements Store.
func (m *Memory) Members(ctx context.Context, room string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.rooms[room]
	if r == nil {
		return nil, ErrNotFound
	}
	out := make([]string, 0, len(r.members))
	for u := range r.members {
		out = append(out, u)
	}
	slices.Sort(out)
	return out, nil
}

// Direct implements Store.
func (m *Memory) Direct(ctx context.Context, a, b string) (string, bool, error) {
	room := DirectRoom(a, b)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rooms[room] != nil {
		return room, false, nil
	}
	m.rooms[room] = &memRecord{kind: Direct, members: map[string]bool{a: true, b: true}}
	return room, true, nil
}

// Touch implements Store.
func (m *Memory) Touch(ctx context.Context, user, room string, ms int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	rs := m.users[user]
	if rs == nil {
		rs = make(map[string]int64)
		m.users[user] = rs
	}
	if ms > rs[room] {
		rs[room] = ms
	}
	if len(rs) > MaxConversations {
		oldest, at := "", int64(0)
		for r, t := range rs {
			if oldest == "" || t < at || t == at && r < oldest {
				oldest, at = r, t
			}
		}
		delete(rs, oldest)
	}
	return nil
}

// Conversations implements Store.
func (m *Memory) Conversations(ctx context.Context, user string, limit int) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rs := m.users[user]
	out := make([]string, 0, len(rs))
	for r := range rs {
		out = append(out, r)
	}
	slices.SortFunc(out, func(x, y string) int {
		if rs[x] != rs[y] {
			if rs[x] > rs[y] {
				return -1
			}
			return 1
		}
		return strings.Compare(x, y)
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
