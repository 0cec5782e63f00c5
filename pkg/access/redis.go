package access

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"

	"example.com/chat/pkg/history"
)

// Redis is the Store of a cluster of nodes, in the history.Keys layout:
// a room's record and members carry its hash tag (one slot with its log,
// so creating a private room can check atomically that it has no log), a
// user's conversations a tag of their own.
type Redis struct {
	client redis.UniversalClient
	keys   history.Keys
}

// NewRedis returns a Store on client under the deployment prefix (empty:
// history.DefaultPrefix). It never closes the client.
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	return &Redis{client: client, keys: history.NewKeys(prefix)}
}

var _ Store = (*Redis)(nil)

func unavailable(op string, err error) error {
	return fmt.Errorf("access: %s: %w: %w", op, ErrUnavailable, err)
}

// Check implements Store: one round trip (the record and the membership,
// pipelined).
func (r *Redis) Check(ctx context.Context, room, user string) (Decision, error) {
	if KindOfName(room) == Personal {
		return Decision{Kind: Personal, Member: PersonalRoom(user) == room}, nil
	}
	var rec *redis.MapStringStringCmd
	var member *redis.BoolCmd
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		rec = p.HGetAll(ctx, r.keys.Access(room))
		member = p.SIsMember(ctx, r.keys.Members(room), user)
		return nil
	})
	if err != nil {
		return Decision{}, unavailable("check "+room, err)
	}
	fields := rec.Val()
	if len(fields) == 0 {
		return decide(room, nil, user), nil
	}
	d := Decision{Kind: Private, Member: member.Val(), Owner: fields["owner"]}
	if fields["kind"] == "direct" {
		d.Kind, d.Owner = Direct, ""
	}
	return d, nil
}

// createPrivateScript: KEYS access, meta (the room's log meta), members;
// ARGV owner. Returns 0 if the room exists.
var createPrivateScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'kind', 'private', 'owner', ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
`)

// CreatePrivate implements Store.
func (r *Redis) CreatePrivate(ctx context.Context, room, owner string) error {
	if KindOfName(room) != Public {
		return ErrReserved
	}
	n, err := createPrivateScript.Run(ctx, r.client, []string{r.keys.Access(room), r.keys.Meta(room), r.keys.Members(room)}, owner).Int()
	if err != nil {
		return unavailable("create "+room, err)
	}
	if n == 0 {
		return ErrExists
	}
	return nil
}

// memberScript changes a private room's members if ARGV[1] owns it:
// KEYS access, members; ARGV by, op ("add", "remove"), user. Returns 1
// done, 0 not private, -1 not the owner, -2 the owner cannot be removed.
var memberScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'kind', 'owner')
if rec[1] ~= 'private' then return 0 end
if rec[2] ~= ARGV[1] then return -1 end
if ARGV[2] == 'add' then
  redis.call('SADD', KEYS[2], ARGV[3])
else
  if ARGV[3] == rec[2] then return -2 end
  redis.call('SREM', KEYS[2], ARGV[3])
end
return 1
`)

func (r *Redis) member(ctx context.Context, op, room, by, user string) error {
	n, err := memberScript.Run(ctx, r.client, []string{r.keys.Access(room), r.keys.Members(room)}, by, op, user).Int()
	if err != nil {
		return unavailable(op+" member of "+room, err)
	}
	switch n {
	case 0:
		return ErrNotFound
	case -1, -2:
		return ErrForbidden
	}
	return nil
}

// AddMember implements Store.
func (r *Redis) AddMember(ctx context.Context, room, by, user string) error {
	return r.member(ctx, "add", room, by, user)
}

// RemoveMember implements Store. The room leaves the user's
// conversations too.
func (r *Redis) RemoveMember(ctx context.Context, room, by, user string) error {
	if err := r.member(ctx, "remove", room, by, user); err != nil {
		return err
	}
	if err := r.client.ZRem(ctx, r.keys.UserRooms(user), room).Err(); err != nil {
		return unavailable("forget "+room, err)
	}
	return nil
}

// Members implements Store.
func (r *Redis) Members(ctx context.Context, room string) ([]string, error) {
	var exists *redis.IntCmd
	var members *redis.StringSliceCmd
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		exists = p.Exists(ctx, r.keys.Access(room))
		members = p.SMembers(ctx, r.keys.Members(room))
		return nil
	})
	if err != nil {
		return nil, unavailable("members of "+room, err)
	}
	if exists.Val() == 0 {
		return nil, ErrNotFound
	}
	out := members.Val()
	slices.Sort(out)
	return out, nil
}

// directScript records a direct conversation: KEYS access, members; ARGV
// a, b. Returns 1 if it is new.
var directScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'kind', 'direct')
redis.call('SADD', KEYS[2], ARGV[1], ARGV[2])
return 1
`)

// Direct implements Store.
func (r *Redis) Direct(ctx context.Context, a, b string) (string, bool, error) {
	room := DirectRoom(a, b)
	n, err := directScript.Run(ctx, r.client, []string{r.keys.Access(room), r.keys.Members(room)}, a, b).Int()
	if err != nil {
		return "", false, unavailable("direct "+room, err)
	}
	return room, n == 1, nil
}

// touchScript: KEYS user rooms; ARGV ms, room, max. The score only grows;
// the list keeps the newest max.
var touchScript = redis.NewScript(`
redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
return 1
`)

// Touch implements Store.
func (r *Redis) Touch(ctx context.Context, user, room string, ms int64) error {
	err := touchScript.Run(ctx, r.client, []string{r.keys.UserRooms(user)}, strconv.FormatInt(ms, 10), room, MaxConversations).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return unavailable("touch "+room, err)
	}
	return nil
}

// Conversations implements Store.
func (r *Redis) Conversations(ctx context.Context, user string, limit int) ([]string, error) {
	stop := int64(-1)
	if limit > 0 {
		stop = int64(limit) - 1
	}
	out, err := r.client.ZRevRange(ctx, r.keys.UserRooms(user), 0, stop).Result()
	if err != nil {
		return nil, unavailable("conversations", err)
	}
	return out, nil
}
