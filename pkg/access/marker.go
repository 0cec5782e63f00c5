package access

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Marker is a user's read marker in a room: the messages up to Seq of
// Epoch are read. The zero Marker reads nothing.
type Marker struct {
	Epoch string
	Seq   uint64
}

// ahead reports whether m moves past old: a later seq of the same epoch,
// or any seq of another epoch (the room's log restarted; the hub checks
// that m's epoch is the room's).
func (m Marker) ahead(old Marker) bool {
	return m.Epoch != old.Epoch || m.Seq > old.Seq
}

// Markers keeps read markers per user per room. Users are normalised
// names, rooms validated names. A user keeps at most MaxConversations
// markers: past it, setting one for a new room drops another's.
type Markers interface {
	// Mark moves user's marker of room to m if m is ahead of it (the same
	// epoch and a higher seq, or another epoch), and returns the marker
	// as it is afterwards: a marker never moves back, even when two
	// devices race.
	Mark(ctx context.Context, user, room string, m Marker) (Marker, error)
	// Marks returns user's markers of rooms, by room; rooms without one
	// are absent.
	Marks(ctx context.Context, user string, rooms []string) (map[string]Marker, error)
}

var (
	_ Markers = (*Memory)(nil)
	_ Markers = (*Redis)(nil)
)

// Mark implements Markers.
func (m *Memory) Mark(ctx context.Context, user, room string, mk Marker) (Marker, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ms := m.marks[user]
	if ms == nil {
		ms = make(map[string]Marker)
		m.marks[user] = ms
	}
	old, ok := ms[room]
	if ok && !mk.ahead(old) {
		return old, nil
	}
	if !ok && len(ms) >= MaxConversations {
		for r := range ms { // any other room's
			delete(ms, r)
			break
		}
	}
	ms[room] = mk
	return mk, nil
}

// Marks implements Markers.
func (m *Memory) Marks(ctx context.Context, user string, rooms []string) (map[string]Marker, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Marker, len(rooms))
	for _, r := range rooms {
		if mk, ok := m.marks[user][r]; ok {
			out[r] = mk
		}
	}
	return out, nil
}

// markScript moves a marker forward in one step.
//
//	KEYS[1] the user's markers hash (field: room, value "<epoch>:<seq>")
//	ARGV[1] room, ARGV[2] epoch, ARGV[3] seq, ARGV[4] MaxConversations
//
// It returns the marker afterwards, "<epoch>:<seq>".
var markScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local sep = string.find(old, ':', 1, true)
  if sep and string.sub(old, 1, sep - 1) == ARGV[2] and tonumber(string.sub(old, sep + 1)) >= tonumber(ARGV[3]) then
    return old
  end
elseif redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  local drop = redis.call('HRANDFIELD', KEYS[1])
  if drop then redis.call('HDEL', KEYS[1], drop) end
end
local mk = ARGV[2] .. ':' .. ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], mk)
return mk
`)

// Mark implements Markers.
func (r *Redis) Mark(ctx context.Context, user, room string, mk Marker) (Marker, error) {
	s, err := markScript.Run(ctx, r.client, []string{r.keys.UserReads(user)}, room, mk.Epoch, strconv.FormatUint(mk.Seq, 10), MaxConversations).Text()
	if err != nil {
		return Marker{}, unavailable("mark "+room, err)
	}
	out, err := parseMarker(s)
	if err != nil {
		return Marker{}, fmt.Errorf("access: mark %s: %w", room, err)
	}
	return out, nil
}

// Marks implements Markers: one HMGET.
func (r *Redis) Marks(ctx context.Context, user string, rooms []string) (map[string]Marker, error) {
	out := make(map[string]Marker, len(rooms))
	if len(rooms) == 0 {
		return out, nil
	}
	vals, err := r.client.HMGet(ctx, r.keys.UserReads(user), rooms...).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, unavailable("marks", err)
	}
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		mk, err := parseMarker(s)
		if err != nil {
			return nil, fmt.Errorf("access: marks: %w", err)
		}
		out[rooms[i]] = mk
	}
	return out, nil
}

func parseMarker(s string) (Marker, error) {
	epoch, seqStr, ok := strings.Cut(s, ":")
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if !ok || err != nil {
		return Marker{}, fmt.Errorf("malformed marker %q", s)
	}
	return Marker{Epoch: epoch, Seq: seq}, nil
}
