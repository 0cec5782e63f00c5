package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/pkg/history"
	"example.com/chat/pkg/presence"
	"example.com/chat/pkg/pubsub"
)

// openRedis connects to the Redis of -redis-url. A node that cannot reach
// Redis at start still starts (not ready) and recovers when Redis comes up:
// a restart must never be needed.
func openRedis(ctx context.Context, cfg Config, log *slog.Logger) (*backends, error) {
	if isClusterURL(cfg.RedisURL) {
		return openRedisCluster(ctx, cfg, log)
	}
	if isSentinelURL(cfg.RedisURL) {
		return openRedisSentinel(ctx, cfg, log)
	}
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("node: -redis-url: %w", err)
	}
	// Fail fast while Redis is down, so clients get a clear Unavailable
	// instead of waiting; go-redis retries and redials by itself.
	opts.DialTimeout = 2 * time.Second
	opts.ReadTimeout = readTimeout(cfg)
	opts.WriteTimeout = 2 * time.Second
	opts.MaxRetries = 1
	opts.DialerRetries = 1
	opts.Dialer = redisDialer(opts.DialTimeout, opts.TLSConfig)
	return redisBackends(ctx, cfg, log, "redis", redis.NewClient(opts), "")
}

// readTimeout is the Redis clients' read timeout: short, so that a dead
// Redis fails a request fast, yet longer than a publish's WAIT for
// -redis-min-replicas (go-redis reads a pipeline's replies under it).
func readTimeout(cfg Config) time.Duration {
	d := 2 * time.Second
	if cfg.RedisMinReplicas > 0 {
		d = max(d, cfg.RedisReplicaTimeout+time.Second)
	}
	return d
}

// redisBackends builds the backends of a single Redis, or of the master
// of a Sentinel deployment (client is then go-redis's failover client,
// which follows the master across failovers, pub/sub included), with the
// key prefix (empty: history.DefaultPrefix).
func redisBackends(ctx context.Context, cfg Config, log *slog.Logger, name string, client *redis.Client, prefix string) (*backends, error) {
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		log.Warn("redis unreachable at start; serving not-ready until it answers", "err", err, "backend", name)
	}
	b := pubsub.NewRedis(pubsub.RedisConfig{
		Client:         client,
		Prefix:         prefix,
		HistorySize:    cfg.LogSize,
		HistoryTTL:     cfg.HistoryTTL,
		MinReplicas:    cfg.RedisMinReplicas,
		ReplicaTimeout: cfg.RedisReplicaTimeout,
		Logger:         log,
	})
	return &backends{
		name:     name,
		broker:   b,
		history:  history.NewRedis(history.RedisConfig{Client: client, Prefix: prefix}),
		presence: presence.NewRedis(client, prefix),
		ping:     func(ctx context.Context) error { return client.Ping(ctx).Err() },
		redis:    client,
		prefix:   history.NewKeys(prefix).Prefix(),
		close: func() {
			b.Close()
			client.Close()
		},
	}, nil
}

// go-redis writes its own notices (a pool that failed to dial, a dropped
// pub/sub connection) through one process-wide logger, in plain text on
// stderr by default. The node binary routes them into the node's JSON log
// instead: Main installs redisLogger once (redis.SetLogger is global state
// in go-redis), and Run points it at its logger. In-process nodes in tests
// never install it, so a finished test's logger is never written to.
var redisLog atomic.Pointer[slog.Logger]

type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if l := redisLog.Load(); l != nil {
		l.WarnContext(ctx, "go-redis", "detail", fmt.Sprintf(format, v...))
	}
}
