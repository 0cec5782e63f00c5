package presence

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

var _ Store = (*Redis)(nil)

// ErrUnavailable reports that Redis cannot be reached.
var ErrUnavailable = errors.New("presence: store unavailable")

// Redis keeps presence in a sorted set per room, `<prefix>{<room>}:presence`
// (the room's hash tag, like its log), whose members are "<user>\x00<node>"
// scored by expiry in unix milliseconds, plus a cluster-wide sorted set
// `<prefix>presence:users` with the same members, for ActiveUsers. Every
// join and refresh prunes the cluster-wide set and extends its TTL to its
// newest member's expiry, so it empties and expires by itself once no node
// has anyone to refresh.
type Redis struct {
	client redis.UniversalClient
	prefix string
}

// NewRedis returns a Store on client with key prefix (empty: "chat:").
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	if prefix == "" {
		prefix = "chat:"
	}
	return &Redis{client: client, prefix: prefix}
}

func (r *Redis) roomKey(room string) string { return r.prefix + "{" + room + "}:presence" }
func (r *Redis) allKey() string             { return r.prefix + "presence:users" }

// The scripts find a user's members with ZSCAN MATCH "<user>\x00*" (a few
// devices per user), so scores can be expiries.
var joinScript = redis.NewScript(`
local now = tonumber(ARGV[3])
local was = 0
local cursor = '0'
repeat
  local r = redis.call('ZSCAN', KEYS[1], cursor, 'MATCH', ARGV[6], 'COUNT', 100)
  cursor = r[1]
  for i = 1, #r[2], 2 do
    if tonumber(r[2][i+1]) > now then was = 1 end
  end
until cursor == '0'
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1] .. '\0' .. ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return was
`)

var leaveScript = redis.NewScript(`
local now = tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1] .. '\0' .. ARGV[2])
local still = 0
local cursor = '0'
repeat
  local r = redis.call('ZSCAN', KEYS[1], cursor, 'MATCH', ARGV[4], 'COUNT', 100)
  cursor = r[1]
  for i = 1, #r[2], 2 do
    if tonumber(r[2][i+1]) > now then still = 1 end
  end
until cursor == '0'
return still
`)

// usersScript records members (ARGV[3], ARGV[4], ...) in the cluster-wide
// set with expiry ARGV[1], prunes the members that expired by ARGV[2]
// (now), and makes the key live at least until ARGV[1]: the key dies with
// its last member when no node refreshes it any more (all users left, or
// their nodes died), and a short refresh (a draining node's grace) never
// shortens it under another node's longer records. Its PTTL is -1 on a
// key created before it had a TTL, which gets one.
var usersScript = redis.NewScript(`
local exp, now = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[1], exp, ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local left = exp - now
if left > 0 and redis.call('PTTL', KEYS[1]) < left then
  redis.call('PEXPIRE', KEYS[1], left)
end
return 0
`)

// countScript counts distinct live users in a set without sending them.
var countScript = redis.NewScript(`
local ms = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
local seen, n = {}, 0
for _, m in ipairs(ms) do
  local u = string.match(m, '^(.-)%z')
  if u and not seen[u] then seen[u] = true; n = n + 1 end
end
return n
`)

func wrap(op, room string, err error) error {
	return fmt.Errorf("presence: %s %q: %w", op, room, errors.Join(ErrUnavailable, err))
}

func nowMs() int64 { return time.Now().UnixMilli() }

// Join implements Store.
func (r *Redis) Join(ctx context.Context, room, user, node string, ttl time.Duration) (bool, error) {
	now := nowMs()
	exp := now + ttl.Milliseconds()
	was, err := joinScript.Run(ctx, r.client, []string{r.roomKey(room)}, user, node, now, exp, 2*ttl.Milliseconds(), pattern(user)).Int()
	if err != nil {
		return false, wrap("join", room, err)
	}
	if err := usersScript.Run(ctx, r.client, []string{r.allKey()}, exp, now, user+"\x00"+node).Err(); err != nil {
		return false, wrap("join", room, err)
	}
	return was == 1, nil
}

// Leave implements Store. The cluster-wide record expires by itself: the
// user may be in other rooms on this node.
func (r *Redis) Leave(ctx context.Context, room, user, node string) (bool, error) {
	still, err := leaveScript.Run(ctx, r.client, []string{r.roomKey(room)}, user, node, nowMs(), pattern(user)).Int()
	if err != nil {
		return false, wrap("leave", room, err)
	}
	return still == 1, nil
}

// Refresh implements Store.
func (r *Redis) Refresh(ctx context.Context, room, node string, users []string, ttl time.Duration) error {
	if len(users) == 0 {
		return nil
	}
	now := nowMs()
	exp := now + ttl.Milliseconds()
	zs := make([]redis.Z, len(users))
	args := make([]any, 0, 2+len(users))
	args = append(args, exp, now)
	for i, u := range users {
		zs[i] = redis.Z{Score: float64(exp), Member: u + "\x00" + node}
		args = append(args, u+"\x00"+node)
	}
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, r.roomKey(room), zs...)
		p.PExpire(ctx, r.roomKey(room), 2*ttl)
		// Eval, not Run: a pipeline cannot fall back from EVALSHA.
		usersScript.Eval(ctx, p, []string{r.allKey()}, args...)
		return nil
	})
	if err != nil {
		return wrap("refresh", room, err)
	}
	return nil
}

// List implements Store.
func (r *Redis) List(ctx context.Context, room string, limit int) ([]string, int, error) {
	now := strconv.FormatInt(nowMs(), 10)
	if limit <= 0 {
		n, err := countScript.Run(ctx, r.client, []string{r.roomKey(room)}, now).Int()
		if err != nil {
			return nil, 0, wrap("count", room, err)
		}
		return nil, n, nil
	}
	ms, err := r.client.ZRangeByScore(ctx, r.roomKey(room), &redis.ZRangeBy{Min: "(" + now, Max: "+inf"}).Result()
	if err != nil {
		return nil, 0, wrap("list", room, err)
	}
	users := distinct(ms)
	n := len(users)
	if len(users) > limit {
		users = users[:limit]
	}
	return users, n, nil
}

// ActiveUsers implements Store.
func (r *Redis) ActiveUsers(ctx context.Context) (int, error) {
	n, err := countScript.Run(ctx, r.client, []string{r.allKey()}, strconv.FormatInt(nowMs(), 10)).Int()
	if err != nil {
		return 0, wrap("active users", "", err)
	}
	return n, nil
}
