package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// RedisConfig configures a Redis limiter.
type RedisConfig struct {
	// Client is the Redis (or Redis Cluster) the nodes share. Required.
	Client redis.UniversalClient
	// Prefix starts every key, as for the deployment's other keys; empty
	// means "chat:". A key is Prefix + "ratelimit:{" + key + "}".
	Prefix string
	// Limit applies to every key. Its Rate must be positive.
	Limit Limit
	// Timeout bounds one call to Redis, after which the local bucket
	// decides. Zero means 1 s.
	Timeout time.Duration
	// RetryInterval is how long the local bucket decides alone after a
	// Redis failure before Redis is asked again: an outage costs one slow
	// call per interval, not one per send. Zero means 1 s.
	RetryInterval time.Duration
	// MaxKeys bounds the local bucket's keys (see MemoryConfig). Zero means
	// 262144.
	MaxKeys int
	// Logger receives the start and end of outages. Nil discards them.
	Logger *slog.Logger
}

// Redis is a Limiter whose budgets live in Redis, shared by every node
// that uses the same Redis and Prefix; see the package documentation for
// its local pre-check and its fallback.
type Redis struct {
	client    redis.UniversalClient
	prefix    string
	limit     Limit
	g         gcra
	argv      []any // the script's ARGV: interval and tolerance in µs
	timeout   time.Duration
	retry     time.Duration
	local     *Memory
	log       *slog.Logger
	downUntil atomic.Int64 // unix nanos (caller's clock) before which Redis is not asked
	down      atomic.Bool  // an outage is under way (logged at its start and end)
	leases    leases

	errors    prometheus.Counter
	decisions *prometheus.CounterVec
}

var _ Limiter = (*Redis)(nil)

// gcraScript is the GCRA of one key in one round trip, on the server's
// clock. KEYS[1] holds the TAT in microseconds; ARGV[1] is the interval T
// and ARGV[2] the tolerance tau, in microseconds; ARGV[3] how many events
// the caller would like admitted at once (a lease; at least 1). It admits
// as many of them as the budget has room for and returns {k, 0} with k >=
// 1, or {0, µs until one would pass}. The key expires when the bucket is
// full again, since a past TAT means the same as none.
var gcraScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3] or '1')
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local stepped = tat > now + tolerance
if stepped then tat = now + tolerance end
local k = math.floor((now + tolerance - tat) / interval)
if k < 1 then
  if stepped then
    -- The clock stepped back: keep the clamped TAT, or the key would stay
    -- refused until the clock caught up.
    redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
  end
  return {0, math.ceil(tat + interval - tolerance - now)}
end
if k > want then k = want end
local nxt = tat + k * interval
local ttl = math.ceil((nxt - now) / 1000)
if ttl < 1 then ttl = 1 end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', ttl)
return {k, 0}
`)

// NewRedis returns a Redis limiter. It does not contact Redis: the script
// is loaded on first use.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	if cfg.Client == nil {
		return nil, errors.New("ratelimit: RedisConfig.Client is required")
	}
	local, err := NewMemory(MemoryConfig{Limit: cfg.Limit, MaxKeys: cfg.MaxKeys})
	if err != nil {
		return nil, err
	}
	l := local.Limit()
	if cfg.Prefix == "" {
		cfg.Prefix = "chat:"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	g := newGCRA(l)
	r := &Redis{
		client:  cfg.Client,
		prefix:  cfg.Prefix + "ratelimit:",
		limit:   l,
		g:       g,
		argv:    []any{micros(g.interval), micros(g.tolerance)},
		timeout: cfg.Timeout,
		retry:   cfg.RetryInterval,
		local:   local,
		log:     cfg.Logger,
		leases:  leases{max: max(1, min(maxLease, l.Burst/16))},
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_ratelimit_redis_errors_total",
			Help: "Send-limit checks Redis failed to answer; each was decided by the node's local bucket (fail open).",
		}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chat_ratelimit_decisions_total",
			Help: "Send-limit decisions by who made them (redis; local: refused by the pre-check without a round trip; fallback: Redis unavailable) and result.",
		}, []string{"by", "result"}),
	}
	return r, nil
}

// micros formats nanoseconds as microseconds for the script, keeping the
// fraction of a rate above a million per second.
func micros(ns int64) string { return strconv.FormatFloat(float64(ns)/1e3, 'f', -1, 64) }

// Key returns the Redis key that holds key's budget.
func (r *Redis) Key(key string) string { return r.prefix + "{" + key + "}" }

// Limit returns the limit applied to every key.
func (r *Redis) Limit() Limit { return r.limit }

// Allow charges one event to key in Redis if the shared budget has room.
// now drives only the local bucket (pre-check and fallback); Redis judges
// by its own clock. It returns an error only when ctx is done.
func (r *Redis) Allow(ctx context.Context, key string, now time.Time) (Decision, error) {
	if d := r.local.peek(key, now); !d.Allowed {
		r.count("local", d)
		return d, nil
	}
	if now.UnixNano() < r.downUntil.Load() {
		return r.fallback(ctx, key, now)
	}
	want, ok := r.leases.take(key, now)
	if ok {
		// Spent from what Redis granted this node a moment ago.
		d := Decision{Allowed: true}
		r.local.charge(key, now)
		r.count("lease", d)
		return d, nil
	}
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	res, err := gcraScript.Run(cctx, r.client, []string{r.Key(key)}, r.argv[0], r.argv[1], want).Int64Slice()
	cancel()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("unexpected reply %v", res)
	}
	if err != nil {
		if ctx.Err() != nil {
			return Decision{}, fmt.Errorf("ratelimit: allow %q: %w", key, ctx.Err())
		}
		r.errors.Inc()
		r.downUntil.Store(now.Add(r.retry).UnixNano())
		if !r.down.Swap(true) {
			r.log.Warn("send limits: redis unavailable; each node limits alone until it answers", "err", err)
		}
		return r.fallback(ctx, key, now)
	}
	if r.down.Swap(false) {
		r.log.Info("send limits: redis answers again")
	}
	var d Decision
	if res[0] >= 1 {
		d.Allowed = true
		r.local.charge(key, now)
		r.leases.grant(key, now, int(res[0])-1)
	} else {
		d.RetryAfter = max(time.Duration(res[1])*time.Microsecond, time.Microsecond)
		r.local.block(key, now, now.Add(d.RetryAfter))
	}
	r.count("redis", d)
	return d, nil
}

// fallback decides on the local bucket alone, while Redis is unavailable.
func (r *Redis) fallback(ctx context.Context, key string, now time.Time) (Decision, error) {
	d, err := r.local.Allow(ctx, key, now)
	r.count("fallback", d)
	return d, err
}

func (r *Redis) count(by string, d Decision) {
	result := "refused"
	if d.Allowed {
		result = "allowed"
	}
	r.decisions.WithLabelValues(by, result).Inc()
}

// Describe implements prometheus.Collector.
func (r *Redis) Describe(ch chan<- *prometheus.Desc) {
	r.errors.Describe(ch)
	r.decisions.Describe(ch)
	r.local.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *Redis) Collect(ch chan<- prometheus.Metric) {
	r.errors.Collect(ch)
	r.decisions.Collect(ch)
	r.local.Collect(ch)
}
