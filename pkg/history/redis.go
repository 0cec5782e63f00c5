package history

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

// readScript reads a room's meta and part of its log in one atomic step,
// with the chat state of the entries read.
//
//	KEYS[1] meta hash, KEYS[2] log list, KEYS[3] state hash
//	ARGV[1] mode: "recent", "since" or "before"
//	ARGV[2] limit (may be zero or negative)
//	ARGV[3] epoch the caller knows ("" for any), since and before only
//	ARGV[4] afterSeq (since) or beforeSeq (before)
//
// It returns {epoch, seq, entries newest first, states, llen}: states has
// one element per entry, its state JSON (see stateJSON) or false, and is
// empty when the room never had an event (meta "ev" unset). The log is
// newest first and its ids contiguous within an epoch, so the entry with
// id s is at index seq-s: every mode costs the page (LRANGE's walk to its
// start aside), not the log.
//
// For "since" it fetches only what Since can return: the oldest max(limit,
// 1) entries after afterSeq (all of them when limit is negative) if the log
// still holds the one right after afterSeq, else (or when afterSeq is past
// the newest id) the newest limit entries. SincePage then applies the rules
// to that suffix of the log exactly as it would to the whole list. For
// "before" it fetches the newest limit entries below beforeSeq (zero or
// past the newest: the newest entries), or the newest limit when the epoch
// differs.
var readScript = redis.NewScript(`
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'ev')
local epoch = meta[1] or ''
local seq = meta[2] or '0'
local entries = {}
if epoch == '' then
  return {epoch, seq, entries, {}, 0}
end
local limit = tonumber(ARGV[2])
local function newest()
  if limit > 0 then
    return redis.call('LRANGE', KEYS[2], 0, limit - 1)
  end
  return {}
end
local llen = redis.call('LLEN', KEYS[2])
if ARGV[1] == 'recent' then
  entries = newest()
elseif ARGV[3] ~= '' and ARGV[3] ~= epoch then
  entries = newest()
elseif ARGV[1] == 'before' then
  local k = tonumber(seq) - tonumber(ARGV[4]) + 1
  if tonumber(ARGV[4]) == 0 or k < 0 then k = 0 end
  if limit > 0 and k < llen then
    entries = redis.call('LRANGE', KEYS[2], k, k + limit - 1)
  end
else
  local k = tonumber(seq) - tonumber(ARGV[4])
  if k < 0 then
    entries = newest()
  elseif k > 0 then
    if llen < k then
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
local states = {}
if meta[3] and #entries > 0 then
  local ids = {}
  for i, e in ipairs(entries) do
    ids[i] = string.match(e, '^(%d+):')
  end
  states = redis.call('HMGET', KEYS[3], unpack(ids))
end
return {epoch, seq, entries, states, llen}
`)

// Recent implements Store.
func (r *Redis) Recent(ctx context.Context, room string, limit int) (Page, error) {
	pos, entries, oldest, err := r.read(ctx, room, "recent", limit, "", 0)
	if err != nil {
		return Page{}, fmt.Errorf("history: recent %q: %w", room, err)
	}
	if pos.Epoch == "" {
		return Page{}, nil
	}
	return Page{Entries: entries, Position: pos, Oldest: oldest}, nil
}

// Before implements Store.
func (r *Redis) Before(ctx context.Context, room, epoch string, beforeSeq uint64, limit int) (Page, error) {
	pos, entries, oldest, err := r.read(ctx, room, "before", limit, epoch, beforeSeq)
	if err != nil {
		return Page{}, fmt.Errorf("history: before %q: %w", room, err)
	}
	if pos.Epoch == "" {
		return Page{Truncated: epoch != "" && beforeSeq > 0}, nil
	}
	if epoch != "" && epoch != pos.Epoch {
		return Page{Entries: entries, Position: pos, Oldest: oldest, Truncated: true}, nil
	}
	return beforePage(entries, pos, oldest), nil
}

// Since implements Store.
func (r *Redis) Since(ctx context.Context, room, epoch string, afterSeq uint64, limit int) (Page, error) {
	pos, entries, oldest, err := r.read(ctx, room, "since", limit, epoch, afterSeq)
	if err != nil {
		return Page{}, fmt.Errorf("history: since %q: %w", room, err)
	}
	if pos.Epoch == "" {
		// The room has no log: the caller missed nothing unless it held
		// entries of a log that is gone (same rule as Memory).
		return Page{Truncated: epoch != "" && afterSeq > 0}, nil
	}
	p := SincePage(entries, pos, epoch, afterSeq, limit)
	p.Oldest = oldest
	return p, nil
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

// read runs readScript and returns the position, the entries oldest first
// with their states, and the oldest id the log holds (zero if none). Errors
// are not yet wrapped with the operation.
func (r *Redis) read(ctx context.Context, room, mode string, limit int, epoch string, seq uint64) (Position, []Entry, uint64, error) {
	keys := []string{r.keys.Meta(room), r.keys.Log(room), r.keys.State(room)}
	res, err := readScript.Run(ctx, r.client, keys, mode, limit, epoch, strconv.FormatUint(seq, 10)).Slice()
	if err != nil {
		return Position{}, nil, 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if len(res) != 5 {
		return Position{}, nil, 0, fmt.Errorf("unexpected script reply of %d items", len(res))
	}
	epochStr, _ := res[0].(string)
	seqStr, _ := res[1].(string)
	pos, err := parsePosition(epochStr, seqStr)
	if err != nil {
		return Position{}, nil, 0, err
	}
	raw, _ := res[2].([]any)
	states, _ := res[3].([]any)
	llen, _ := res[4].(int64)
	var oldest uint64
	if llen > 0 && uint64(llen) <= pos.Seq {
		oldest = pos.Seq - uint64(llen) + 1
	}
	entries := make([]Entry, 0, len(raw))
	for i := len(raw) - 1; i >= 0; i-- { // the list is newest first
		s, _ := raw[i].(string)
		e, err := ParseEntry([]byte(s))
		if err != nil {
			return Position{}, nil, 0, err
		}
		if i < len(states) {
			if js, ok := states[i].(string); ok {
				if e.State, err = parseState([]byte(js)); err != nil {
					return Position{}, nil, 0, err
				}
			}
		}
		entries = append(entries, e)
	}
	return pos, entries, oldest, nil
}

var _ Summarizer = (*Redis)(nil)

// summaryScript is the position of a room and what a reader's marker
// leaves unread, without reading the log.
//
//	KEYS[1] meta hash, KEYS[2] log list, KEYS[3] events sorted set
//	ARGV[1] the id from which messages are unread (marker + 1), ARGV[2]
//	the marker's epoch: from another epoch, everything held is unread
//
// It returns {epoch, seq, llen, events held with an id >= ARGV[1]}. The
// events set is trimmed with the log, so it holds only events the log
// holds.
var summaryScript = redis.NewScript(`
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'ev')
if not meta[1] then
  return {'', '0', 0, 0}
end
local llen = redis.call('LLEN', KEYS[2])
local ev = 0
if meta[3] then
  local from = ARGV[1]
  if ARGV[2] ~= meta[1] then from = '0' end
  ev = redis.call('ZCOUNT', KEYS[3], from, '+inf')
end
return {meta[1], meta[2] or '0', llen, ev}
`)

// Summaries implements Summarizer: one pipeline of one script per room
// (a round trip per pipeline; go-redis splits it by slot on a Cluster).
func (r *Redis) Summaries(ctx context.Context, reads []Read) ([]Summary, error) {
	if len(reads) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.Cmd, len(reads))
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, rd := range reads {
			from := uint64(0)
			if rd.Seq > 0 {
				from = rd.Seq + 1
			}
			keys := []string{r.keys.Meta(rd.Room), r.keys.Log(rd.Room), r.keys.Events(rd.Room)}
			cmds[i] = summaryScript.EvalSha(ctx, p, keys, strconv.FormatUint(from, 10), rd.Epoch)
		}
		return nil
	})
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// A new or restarted Redis: load it once, and read again.
		if err := summaryScript.Load(ctx, r.client).Err(); err != nil {
			return nil, fmt.Errorf("history: summaries: %w: %w", ErrUnavailable, err)
		}
		return r.Summaries(ctx, reads)
	}
	out := make([]Summary, len(reads))
	for i, rd := range reads {
		res, err := cmds[i].Slice()
		if err != nil {
			return nil, fmt.Errorf("history: summaries: %w: %w", ErrUnavailable, err)
		}
		if len(res) != 4 {
			return nil, fmt.Errorf("history: summaries: unexpected script reply of %d items", len(res))
		}
		epoch, _ := res[0].(string)
		seqStr, _ := res[1].(string)
		llen, _ := res[2].(int64)
		ev, _ := res[3].(int64)
		pos, err := parsePosition(epoch, seqStr)
		if err != nil {
			return nil, fmt.Errorf("history: summaries %q: %w", rd.Room, err)
		}
		var oldest uint64
		if llen > 0 && uint64(llen) <= pos.Seq {
			oldest = pos.Seq - uint64(llen) + 1
		}
		out[i] = Summary{Position: pos, Unread: unread(pos, oldest, rd, int(ev))}
	}
	return out, nil
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
