package pubsub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/pkg/history"
)

var (
	_ Broker    = (*Redis)(nil)
	_ Submitter = (*Redis)(nil)
)

// RedisConfig configures a Redis broker.
type RedisConfig struct {
	// Client is the connection to Redis. Required. The broker takes one
	// connection from it for its subscriptions; it never closes the
	// client: its owner does, after the broker's Close.
	Client redis.UniversalClient
	// Prefix is the deployment's key and channel prefix (see history.Keys).
	// The history.Redis reading the logs must use the same one. Empty means
	// history.DefaultPrefix.
	Prefix string
	// HistorySize is the number of messages kept per room. Zero means 100.
	HistorySize int
	// HistoryTTL is how long a room's log is kept after its last publish:
	// idle rooms expire, and their next publish starts a new epoch. Zero
	// means 24 hours.
	HistoryTTL time.Duration
	// IdempotencyTTL is how long an idempotency key is remembered. Zero
	// means five minutes.
	IdempotencyTTL time.Duration
	// PingInterval is how long the subscriber connection may stay silent
	// before the broker pings Redis, and how long it then waits for the
	// answer before it reconnects. Zero means three seconds.
	PingInterval time.Duration
	// MinReplicas, when positive, makes a stored publish succeed only once
	// at least that many replicas acknowledged it: each pipeline of
	// publish scripts ends with WAIT MinReplicas ReplicaTimeout on the
	// same connection, and a publish whose WAIT reports fewer replicas
	// fails with ErrNotReplicated (it may or may not be stored, and may
	// or may not survive a failover). Zero means off: acknowledged once
	// the master ran the script. See redis_wait.go.
	MinReplicas int
	// ReplicaTimeout bounds the WAIT of MinReplicas. Zero means 500 ms. It
	// must stay below the client's read timeout.
	ReplicaTimeout time.Duration
	// Logger receives connection lifecycle events (lost, restored) and
	// malformed deliveries. Nil discards them.
	Logger *slog.Logger
}

// Redis is the Broker for a cluster of nodes sharing one Redis (or the
// master a Sentinel failover client follows). Stored publishes run one Lua
// script that appends to the room's log (in the history.Keys layout, read
// by history.Redis) and publishes on the room's channel in the same atomic
// step.
//
// Subscriptions run on the subscriber engine that RedisCluster runs too
// (subscribe.go, shard.go), as a cluster of one shard: all subscriptions
// of a node share one pub/sub connection, with SUBSCRIBE, read by one
// goroutine; each Subscribe is confirmed by a PING round trip after it;
// when the connection is lost (a read error, a failed ping or write, or
// Redis confirming again a subscription it had already confirmed) the
// broker calls LostHandler.HandleLost, resubscribes every room, proves
// them back with a PING round trip, and then calls
// Handler.HandleReconnect. Every goroutine is the broker's, and Close
// waits for them.
type Redis struct {
	client redis.UniversalClient
	keys   history.Keys
	cfg    RedisConfig
	log    *slog.Logger
	sub    *subscriber // the receive side, whose closed state is the broker's

	closing chan struct{}    // closed by Close
	pubs    chan *publishReq // publishes waiting for the batcher
	wg      sync.WaitGroup   // the batcher
}

// redisDefaults applies the zero-value defaults that RedisConfig and
// RedisClusterConfig document, and returns the logger to use.
func redisDefaults(historySize *int, historyTTL, idempotencyTTL, pingInterval *time.Duration, logger *slog.Logger) *slog.Logger {
	if *historySize <= 0 {
		*historySize = 100
	}
	if *historyTTL <= 0 {
		*historyTTL = 24 * time.Hour
	}
	if *idempotencyTTL <= 0 {
		*idempotencyTTL = 5 * time.Minute
	}
	if *pingInterval <= 0 {
		*pingInterval = 3 * time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return logger
}

// NewRedis returns a broker on cfg.Client and starts its receive loop.
// Close stops it.
func NewRedis(cfg RedisConfig) *Redis {
	log := redisDefaults(&cfg.HistorySize, &cfg.HistoryTTL, &cfg.IdempotencyTTL, &cfg.PingInterval, cfg.Logger)
	b := &Redis{
		client:  cfg.Client,
		keys:    history.NewKeys(cfg.Prefix),
		cfg:     cfg,
		log:     log.With("component", "pubsub"),
		closing: make(chan struct{}),
		pubs:    make(chan *publishReq, maxPublishBatch),
	}
	b.sub = newSubscriber(context.Background(), subscriberConfig{
		keys:         b.keys,
		topo:         oneServer{cfg.Client},
		pin:          true,
		pingInterval: cfg.PingInterval,
		log:          b.log,
	})
	b.wg.Add(1)
	go b.batchPublishes()
	return b
}

// Keys returns the layout the broker writes.
func (b *Redis) Keys() history.Keys { return b.keys }

// Register implements Broker.
func (b *Redis) Register(h Handler) { b.sub.register(h) }

// Subscribe implements Broker. It returns once Redis confirmed the
// subscription (RedisCluster: the room's master), or with an error
// wrapping ErrUnavailable when ctx ends first; the subscription is then
// rolled back, unless another Subscribe of the room still waits, so that
// concurrent Subscribe and Unsubscribe calls of a room end in the state of
// the last one made. A room already confirmed returns at once.
func (b *Redis) Subscribe(ctx context.Context, room string) error { return b.sub.subscribe(ctx, room) }

// Unsubscribe implements Broker. Deliveries of room stop when it returns;
// the room's worker writes the UNSUBSCRIBE. It returns nil, also after
// Close.
func (b *Redis) Unsubscribe(ctx context.Context, room string) error { return b.sub.unsubscribe(room) }

var _ Syncer = (*Redis)(nil)

// Sync implements Syncer with a PING barrier on the room's subscription
// connection (see subscriber.sync).
func (b *Redis) Sync(ctx context.Context, room string) error { return b.sub.sync(ctx, room) }

// publishScript stores a message and publishes it in one atomic step.
//
//	KEYS[1] meta hash, KEYS[2] log list, KEYS[3] idempotency key (optional
//	for a message; an event always has one)
//	ARGV[1] data, ARGV[2] epoch to create if the room has none,
//	ARGV[3] history size, ARGV[4] history TTL (ms),
//	ARGV[5] idempotency TTL (ms), ARGV[6] channel
//
// An event (an edit, delete or reaction: see history.Effect) has more:
//
//	KEYS[4] state hash, KEYS[5] events sorted set, KEYS[6] the target's
//	reactions set
//	ARGV[7] op ("edit", "delete", "react"), ARGV[8] target seq,
//	ARGV[9] target epoch, ARGV[10] new text or emoji,
//	ARGV[11] reactions member ("<emoji>\n<user>"), ARGV[12] the data of a
//	reaction toggle that removes, ARGV[13] history.MaxReactions
//
// It returns {seq, epoch, result, reacted}: result 0 stored, 1 duplicate,
// 2 the event's target is not in the log or was deleted, 3 too many
// reactions (nothing stored for 2 and 3); reacted is 1 when a reaction
// toggle added. A duplicate refreshes its
// idempotency key: that write, replicated after the original message,
// lets the WAIT of RedisConfig.MinReplicas prove the original replicated
// too (WAIT counts the connection's own last write). A room without meta has lost
// its log (expired, evicted, or Redis restarted): its new epoch starts on an
// empty list and no state. The idempotency key remembers "<epoch>:<seq>", so a key from a
// lost epoch does not turn a new message into a duplicate of a message that
// is gone; one from the epoch a failover rotated away from (meta's "prev",
// see history.Rotator) still names its message, which the new epoch kept.
//
// Once a room had an event (meta "ev"), each publish also drops the state,
// event id and reactions of the entry the trim pushed out of the log, so
// they are bounded by the log; rooms without events pay nothing for it.
// Those keys are named from the meta key, in the room's slot.
// Seq is formatted with %d: Lua's default number formatting turns
// large integers into exponent notation.
var publishScript = redis.NewScript(publishSource)

// publishSource is the text of publishScript. RedisCluster runs it with
// SPUBLISH in place of PUBLISH (see shardedPublishScript).
const publishSource = `
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'ev')
local epoch = meta[1]
local base = string.sub(KEYS[1], 1, -5)
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2], base .. 'state', base .. 'evs')
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  meta[2] = false
end
if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local sep = string.find(seen, ':', 1, true)
    local was = string.sub(seen, 1, (sep or 1) - 1)
    if sep and (was == epoch or was == redis.call('HGET', KEYS[1], 'prev')) then
      redis.call('PEXPIRE', KEYS[3], ARGV[5])
      return {string.sub(seen, sep + 1), epoch, 1, 0}
    end
  end
end
local data = ARGV[1]
local op = ARGV[7]
local st, reacted = nil, 0
if op then
  local head = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
  local target = tonumber(ARGV[8])
  if ARGV[9] ~= epoch or target < 1 or target > head or head - target >= redis.call('LLEN', KEYS[2]) then
    return {'0', epoch, 2, 0}
  end
  local raw = redis.call('HGET', KEYS[4], ARGV[8])
  st = {}
  if raw then st = cjson.decode(raw) end
  if st.d then
    return {'0', epoch, 2, 0}
  end
  if op == 'edit' then
    st.t = ARGV[10]
    st.e = true
  elseif op == 'delete' then
    st = {d = true}
    redis.call('DEL', KEYS[6])
  else
    local r = st.r or {}
    if redis.call('SISMEMBER', KEYS[6], ARGV[11]) == 1 then
      redis.call('SREM', KEYS[6], ARGV[11])
      local n = (r[ARGV[10]] or 1) - 1
      if n > 0 then r[ARGV[10]] = n else r[ARGV[10]] = nil end
      data = ARGV[12]
    else
      if not r[ARGV[10]] then
        local kinds = 0
        for _ in pairs(r) do kinds = kinds + 1 end
        if kinds >= tonumber(ARGV[13]) then
          return {'0', epoch, 3, 0}
        end
      end
      redis.call('SADD', KEYS[6], ARGV[11])
      r[ARGV[10]] = (r[ARGV[10]] or 0) + 1
      reacted = 1
    end
    redis.call('PEXPIRE', KEYS[6], ARGV[4])
    if next(r) == nil then st.r = nil else st.r = r end
  end
end
local seq = string.format('%d', redis.call('HINCRBY', KEYS[1], 'seq', 1))
redis.call('LPUSH', KEYS[2], seq .. ':' .. data)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if st then
  st.v = seq
  redis.call('HSET', KEYS[4], ARGV[8], cjson.encode(st))
  redis.call('ZADD', KEYS[5], seq, seq)
  if not meta[2] then
    redis.call('HSET', KEYS[1], 'ev', '1')
    meta[2] = '1'
  end
end
if meta[2] then
  local gone = tonumber(seq) - tonumber(ARGV[3])
  if gone > 0 then
    local g = string.format('%d', gone)
    redis.call('HDEL', base .. 'state', g)
    redis.call('ZREMRANGEBYSCORE', base .. 'evs', '-inf', g)
    redis.call('DEL', base .. 'rx:' .. epoch .. ':' .. g)
  end
  redis.call('PEXPIRE', base .. 'state', ARGV[4])
  redis.call('PEXPIRE', base .. 'evs', ARGV[4])
end
if KEYS[3] then
  redis.call('SET', KEYS[3], epoch .. ':' .. seq, 'PX', ARGV[5])
end
redis.call('PUBLISH', ARGV[6], epoch .. ':' .. seq .. ':' .. data)
return {seq, epoch, 0, reacted}
`

// Publish implements Broker: Submit, then Wait.
func (b *Redis) Publish(ctx context.Context, room string, data []byte, opts PublishOptions) (PublishResult, error) {
	return b.Submit(ctx, room, data, opts).Wait(ctx)
}

// Submit implements Submitter: the publish joins the batcher's queue
// (redis_batch.go), in the caller's goroutine, so the order of Submit calls
// is the order of the log.
func (b *Redis) Submit(ctx context.Context, room string, data []byte, opts PublishOptions) *Pending {
	if b.isClosed() {
		return Completed(PublishResult{}, fmt.Errorf("pubsub: publish %q: %w", room, ErrClosed))
	}
	r := newPublishReq(ctx, b.keys, room, data, opts, b.cfg.HistorySize, b.cfg.HistoryTTL, b.cfg.IdempotencyTTL, b.closing)
	r.enqueue(b.pubs, b.closing)
	return &r.Pending
}

func parsePublishReply(reply []any) (PublishResult, error) {
	if len(reply) != 4 {
		return PublishResult{}, fmt.Errorf("unexpected script reply of %d items", len(reply))
	}
	seqStr, _ := reply[0].(string)
	epoch, _ := reply[1].(string)
	result, _ := reply[2].(int64)
	reacted, _ := reply[3].(int64)
	switch result {
	case 2:
		return PublishResult{Epoch: epoch}, history.ErrTarget
	case 3:
		return PublishResult{Epoch: epoch}, history.ErrTooManyReactions
	}
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if err != nil || seq == 0 || epoch == "" {
		return PublishResult{}, fmt.Errorf("unexpected script reply %q", reply)
	}
	return PublishResult{Seq: seq, Epoch: epoch, Duplicate: result == 1, Reacted: reacted == 1}, nil
}

// The payload of a room channel's message is
//
//	<epoch>:<seq>:<data>
//
// epoch is the room's log epoch (hex, never a colon; empty for an ephemeral
// event), seq the message's decimal sequence id (0 for an ephemeral event)
// and data the published bytes as is. The publish script writes it for
// stored messages and formatPayload for ephemeral ones; parsePayload is its
// only reader.

func formatPayload(epoch string, seq uint64, data []byte) string {
	return epoch + ":" + strconv.FormatUint(seq, 10) + ":" + string(data)
}

func parsePayload(room, payload string) (Envelope, error) {
	epoch, rest, ok := strings.Cut(payload, ":")
	if !ok {
		return Envelope{}, errors.New("pubsub: malformed payload: no epoch")
	}
	seqStr, data, ok := strings.Cut(rest, ":")
	if !ok {
		return Envelope{}, errors.New("pubsub: malformed payload: no seq")
	}
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if err != nil || (seq == 0) != (epoch == "") {
		return Envelope{}, fmt.Errorf("pubsub: malformed payload: bad seq %q of epoch %q", seqStr, epoch)
	}
	return Envelope{Room: room, Seq: seq, Epoch: epoch, Data: []byte(data)}, nil
}

// idempotencyTTL is how long opts' key is remembered: its own TTL if set,
// else the broker's.
func idempotencyTTL(broker time.Duration, opts PublishOptions) time.Duration {
	if opts.IdempotencyTTL > 0 {
		return opts.IdempotencyTTL
	}
	return broker
}

// newEpoch returns a fresh random epoch id (hex: it never holds a colon).
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Close implements Broker. It closes the subscription connection, stops the
// broker's goroutines and waits for them; it does not close the Client.
func (b *Redis) Close() error {
	if b.sub.close() {
		close(b.closing)
		b.wg.Wait()
	}
	return nil
}

func (b *Redis) isClosed() bool { return b.sub.isClosed() }
