package node

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"example.com/chat/pkg/access"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/presence"
	"example.com/chat/pkg/pubsub"
	"example.com/chat/pkg/ratelimit"
)

// backends are the bus and the log a node runs on.
type backends struct {
	name     string
	broker   pubsub.Broker
	history  history.Store
	presence presence.Store
	// access keeps private rooms, direct conversations and users'
	// conversation lists: in Redis, shared by every node (a member
	// removed on one node is refused on all), or in memory.
	access access.Store
	ping   func(context.Context) error
	close  func()
	// limiter holds users to -send-rate/-send-burst; nil: the hub's
	// per-node default. On Redis it is shared by every node, so that a
	// user spreading its sends over nodes gets one budget.
	limiter ratelimit.Limiter

	// redis and prefix are the Redis (Cluster) client and key prefix of a
	// Redis backend (the send limiter, the node id claim); redis is nil for
	// memory.
	redis  redis.UniversalClient
	prefix string
}

func openBackends(ctx context.Context, cfg Config, log *slog.Logger) (*backends, error) {
	if cfg.RedisURL == "" {
		log.Info("no -redis-url: running on the embedded in-memory backend (single node)")
		mem := history.NewMemory(history.MemoryConfig{Size: cfg.LogSize, TTL: cfg.HistoryTTL})
		b := pubsub.NewMemory(mem)
		return &backends{
			name:     "memory",
			broker:   b,
			history:  mem,
			presence: presence.NewMemory(nil),
			access: access.NewMemory(func(room string) bool {
				pos, err := mem.Position(context.Background(), room)
				return err != nil || pos.Epoch != ""
			}),
			ping:  func(context.Context) error { return nil },
			close: func() { b.Close(); mem.Close() },
		}, nil
	}
	be, err := openRedis(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	// One Lua round trip per send (per lease for a flooding sender), on
	// the Redis clock; while Redis is down, each node limits alone (see
	// pkg/ratelimit).
	l, err := ratelimit.NewRedis(ratelimit.RedisConfig{
		Client: be.redis,
		Prefix: be.prefix,
		Limit:  ratelimit.Limit{Rate: cfg.SendRate, Burst: cfg.SendBurst},
		Logger: log,
	})
	if err != nil {
		be.close()
		return nil, fmt.Errorf("node: -send-rate/-send-burst: %w", err)
	}
	be.limiter = l
	// Redis, Sentinel and Cluster alike: the client and prefix of the log,
	// so that a room's record shares its log's slot.
	be.access = access.NewRedis(be.redis, be.prefix)
	return be, nil
}
