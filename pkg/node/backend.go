package node

import (
	"context"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"example.com/chat/pkg/history"
	"example.com/chat/pkg/presence"
	"example.com/chat/pkg/pubsub"
)

// backends are the bus and the log a node runs on.
type backends struct {
	name     string
	broker   pubsub.Broker
	history  history.Store
	presence presence.Store
	ping     func(context.Context) error
	close    func()

	// redis and prefix are the Redis client and key prefix of a Redis
	// backend (for the node id claim); redis is nil for memory.
	redis  redis.UniversalClient
	prefix string
}

func openBackends(ctx context.Context, cfg Config, log *slog.Logger) (*backends, error) {
	if cfg.RedisURL == "" {
		log.Info("no -redis-url: running on the embedded in-memory backend (single node)")
		mem := history.NewMemory(history.MemoryConfig{Size: cfg.HistorySize})
		b := pubsub.NewMemory(mem)
		return &backends{
			name:     "memory",
			broker:   b,
			history:  mem,
			presence: presence.NewMemory(nil),
			ping:     func(context.Context) error { return nil },
			close:    func() { b.Close() },
		}, nil
	}
	return openRedis(ctx, cfg, log)
}
