package history

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"
)

var _ Store = (*Redis)(nil)

// RedisConfig configures a Redis log reader.
type RedisConfig struct {
	// Client is the connection to Redis (a single node, a failover or a
	// cluster client). Required. Redis does not close it: its owner does.
	Client redis.UniversalClient
	// Prefix is the deployment's key prefix (see Keys). It must equal the
	// prefix of the pubsub.Redis that writes the log. Empty means
	// DefaultPrefix.
	Prefix string
}

// Redis reads the rooms' logs that pubsub.Redis writes, in the layout of
// Keys. Each read is one Lua script, so a page's position (epoch and seq)
// and its entries come from the same instant.
type Redis struct {
	client redis.UniversalClient
	keys   Keys
}

// NewRedis returns a Store reading the logs under cfg.Prefix.
func NewRedis(cfg RedisConfig) *Redis {
	return &Redis{client: cfg.Client, keys: NewKeys(cfg.Prefix)}
}

// Keys returns the layout the store reads.
func (r *Redis) Keys() Keys { return r.keys }

// readScript reads a room's meta and part of its log in one atomic step.
//
//	KEYS[1] meta hash, KEYS[2] log list
//	ARGV[1] mode: "recent" or "since"
//	ARGV[2] limit (may be zero or negative)
//	ARGV[3] epoch the caller knows ("" for any), since only
//	ARGV[4] afterSeq, since only
//
// It returns {epoch, seq, entries newest first}. For "since" it fetches only
// what Since can return: the oldest max(limit, 1) entries after afterSeq
// (all of them when limit is negative) if the log still holds the one right
// after afterSeq, else (or when afterSeq is past the newest id) the newest
// limit entries. SincePage then applies the
// rules to that suffix of the log exactly as it would to the whole list:
// sequence ids are contiguous within an epoch.
var readScript = redis.NewScript(`
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
local epoch = meta[1] or ''
local seq = meta[2] or '0'
local entries = {}
if epoch == '' then
  return {epoch, seq, entries}
end
local limit = tonumber(ARGV[2])
local function newest()
  if limit > 0 then
    return redis.call('LRANGE', KEYS[2], 0, limit - 1)
  end
  return {}
end
if ARGV[1] == 'recent' then
  entries = newest()
elseif ARGV[3] ~= '' and ARGV[3] ~= epoch then
  entries = newest()
else
  local k = tonumber(seq) - tonumber(ARGV[4])
  if k < 0 then
    entries = newest()
  elseif k > 0 then
    if redis.call('LLEN', KEYS[2]) < k then
      entries = newest()
    else
      local from = 0
      if limit >= 0 then
        from = k - math.max(limit, 1)
        if from < 0 then from = 0 end
      end
      entries = redis.call('LRANGE', KEYS[2], from, k - 1)
    end
  end
end
return {epoch, seq, entries}
`)

// Recent implements Store.
func (r *Redis) Recent(ctx context.Context, room string, limit int) (Page, error) {
	pos, entries, err := r.read(ctx, room, "recent", limit, "", 0)
	if err != nil {
		return Page{}, fmt.Errorf("history: recent %q: %w", room, err)
	}
	if pos.Epoch == "" {
		return Page{}, nil
	}
	return Page{Entries: entries, Position: pos}, nil
}

// Since implements Store.
func (r *Redis) Since(ctx context.Context, room, epoch string, afterSeq uint64, limit int) (Page, error) {
	pos, entries, err := r.read(ctx, room, "since", limit, epoch, afterSeq)
	if err != nil {
		return Page{}, fmt.Errorf("history: since %q: %w", room, err)
	}
	if pos.Epoch == "" {
		// The room has no log: the caller missed nothing unless it held
		// entries of a log that is gone (same rule as Memory).
		return Page{Truncated: epoch != "" && afterSeq > 0}, nil
	}
	return SincePage(entries, pos, epoch, afterSeq, limit), nil
}

// Position implements Store.
func (r *Redis) Position(ctx context.Context, room string) (Position, error) {
	vals, err := r.client.HMGet(ctx, r.keys.Meta(room), "epoch", "seq").Result()
	if err != nil {
		return Position{}, fmt.Errorf("history: position %q: %w: %w", room, ErrUnavailable, err)
	}
	epoch, _ := vals[0].(string)
	seqStr, _ := vals[1].(string)
	pos, err := parsePosition(epoch, seqStr)
	if err != nil {
		return Position{}, fmt.Errorf("history: position %q: %w", room, err)
	}
	return pos, nil
}

var _ Rotator = (*Redis)(nil)

// rotateScript moves a room to a new epoch if it is still in the one the
// caller saw go back, in one atomic step with respect to publishes.
//
//	KEYS[1] meta hash
//	ARGV[1] epoch to leave, ARGV[2] new epoch
//
// It returns the room's epoch afterwards ("" if it has no log). The epoch
// left is kept in the meta's "prev" field: an idempotency key of it still
// names its message, whose entry and id the new epoch kept (the key and the
// message replicate together, in the script that wrote both).
var rotateScript = redis.NewScript(`
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return ''
end
if epoch == ARGV[1] then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'prev', ARGV[1])
  return ARGV[2]
end
return epoch
`)

// Rotate implements Rotator.
func (r *Redis) Rotate(ctx context.Context, room, from string) (string, error) {
	epoch, err := rotateScript.Run(ctx, r.client, []string{r.keys.Meta(room)}, from, newEpoch()).Text()
	if err != nil {
		return "", fmt.Errorf("history: rotate %q: %w: %w", room, ErrUnavailable, err)
	}
	return epoch, nil
}

// read runs readScript and returns the position and the entries, oldest
// first. Errors are not yet wrapped with the operation.
func (r *Redis) read(ctx context.Context, room, mode string, limit int, epoch string, afterSeq uint64) (Position, []Entry, error) {
	keys := []string{r.keys.Meta(room), r.keys.Log(room)}
	res, err := readScript.Run(ctx, r.client, keys, mode, limit, epoch, strconv.FormatUint(afterSeq, 10)).Slice()
	if err != nil {
		return Position{}, nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if len(res) != 3 {
		return Position{}, nil, fmt.Errorf("unexpected script reply of %d items", len(res))
	}
	epochStr, _ := res[0].(string)
	seqStr, _ := res[1].(string)
	pos, err := parsePosition(epochStr, seqStr)
	if err != nil {
		return Position{}, nil, err
	}
	raw, _ := res[2].([]any)
	entries := make([]Entry, 0, len(raw))
	for _, v := range slices.Backward(raw) { // the list is newest first
		s, _ := v.(string)
		e, err := ParseEntry([]byte(s))
		if err != nil {
			return Position{}, nil, err
		}
		entries = append(entries, e)
	}
	return pos, entries, nil
}

// parsePosition reads the fields of a meta hash; missing fields are empty.
func parsePosition(epoch, seq string) (Position, error) {
	if seq == "" {
		return Position{Epoch: epoch}, nil
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("malformed seq %q in meta", seq)
	}
	return Position{Epoch: epoch, Seq: n}, nil
}

// ParseEntry decodes one element of a room's log list: the decimal sequence
// id, a colon, then the data bytes as published (which may hold colons).
// Data aliases b.
func ParseEntry(b []byte) (Entry, error) {
	seqPart, data, ok := bytes.Cut(b, []byte{':'})
	if !ok {
		return Entry{}, errors.New("history: malformed log entry: no separator")
	}
	seq, err := strconv.ParseUint(string(seqPart), 10, 64)
	if err != nil || seq == 0 {
		return Entry{}, fmt.Errorf("history: malformed log entry: bad seq %q", seqPart)
	}
	return Entry{Seq: seq, Data: data}, nil
}
