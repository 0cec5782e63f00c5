package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/pkg/history"
)

var (
	_ Broker    = (*RedisCluster)(nil)
	_ Submitter = (*RedisCluster)(nil)
)

// RedisClusterConfig configures a Redis Cluster broker.
type RedisClusterConfig struct {
	// Client is the connection to the cluster. Required. The broker opens
	// one sharded subscription connection per master (through the
	// client's per-node clients); it never closes the client: its owner
	// does, after the broker's Close.
	Client *redis.ClusterClient
	// Prefix is the deployment's key and channel prefix (see history.Keys).
	// The history.Redis reading the logs must use the same one. Empty means
	// history.DefaultPrefix.
	Prefix string
	// HistorySize, HistoryTTL and IdempotencyTTL are as in RedisConfig.
	HistorySize    int
	HistoryTTL     time.Duration
	IdempotencyTTL time.Duration
	// PingInterval is how long a subscription connection may stay silent
	// before the broker pings its master, and how long it then waits for
	// the answer before it reconnects. Zero means three seconds.
	PingInterval time.Duration
	// MinReplicas and ReplicaTimeout are as in RedisConfig; the WAIT goes
	// to the room's master, on the connection that ran the script.
	MinReplicas    int
	ReplicaTimeout time.Duration
	// Logger receives connection lifecycle events and malformed
	// deliveries. Nil discards them.
	Logger *slog.Logger
}

// RedisCluster is the Broker for nodes sharing a Redis Cluster (Redis 7 or
// later). Every key and the channel of a room carry the hash tag {room}, so
// a room lives in one slot, on one master: the publish script (the one
// Redis runs, with SPUBLISH instead of PUBLISH) runs there, and the message
// travels by sharded pub/sub only within that master's shard.
//
// Subscriptions run on the subscriber engine that Redis runs too
// (subscribe.go, shard.go), with SSUBSCRIBE and one shard per master:
// go-redis pins a sharded subscription connection to one node, so the
// broker keeps one connection per master, read by a goroutine of its own,
// and each room's worker subscribes the room on the master that owns its
// slot (the broker is the engine's topology: owner and reload). A
// subscription is confirmed by a PING round trip after it, and only if
// Redis answered the SSUBSCRIBE itself (not MOVED).
//
// Moves. A room leaves its master when Redis says the slot moved (it pushes
// sunsubscribe when the slot migrates away, or answers a resubscription
// with MOVED) or when the master stops answering and the cluster's slot map
// names another owner (a failover). The room's worker then re-reads the
// slot map, subscribes on the new owner, and once that is confirmed the
// broker calls Handler.HandleReconnect, so that the hub fills from history
// what was published in between. A lost connection to a master that still
// owns its slots is re-established and resubscribed by its shard, preceded
// by LostHandler.HandleLost and followed by HandleReconnect.
type RedisCluster struct {
	client *redis.ClusterClient
	keys   history.Keys
	cfg    RedisClusterConfig
	log    *slog.Logger
	sub    *subscriber // the receive side, whose closed state is the broker's

	ctx     context.Context // ended by Close: every background wait
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the slot map reloader, the lanes' batchers
	reloads stateReloader
	lanes   [clusterLanes]chan *publishReq // publishes waiting for their lane's batcher
}

// NewRedisCluster returns a broker on cfg.Client. Close stops it.
func NewRedisCluster(cfg RedisClusterConfig) *RedisCluster {
	log := redisDefaults(&cfg.HistorySize, &cfg.HistoryTTL, &cfg.IdempotencyTTL, &cfg.PingInterval, cfg.Logger)
	ctx, cancel := context.WithCancel(context.Background())
	b := &RedisCluster{
		client: cfg.Client,
		keys:   history.NewKeys(cfg.Prefix),
		cfg:    cfg,
		log:    log.With("component", "pubsub"),
		ctx:    ctx,
		cancel: cancel,
	}
	b.sub = newSubscriber(ctx, subscriberConfig{
		keys:         b.keys,
		topo:         b,
		sharded:      true,
		pingInterval: cfg.PingInterval,
		log:          b.log,
	})
	for i := range b.lanes {
		b.lanes[i] = make(chan *publishReq, maxPublishBatch)
		b.wg.Add(1)
		go b.batchLane(b.lanes[i])
	}
	return b
}

// Keys returns the layout the broker writes.
func (b *RedisCluster) Keys() history.Keys { return b.keys }

// Register implements Broker.
func (b *RedisCluster) Register(h Handler) { b.sub.register(h) }

// Subscribe implements Broker, as Redis.Subscribe does.
func (b *RedisCluster) Subscribe(ctx context.Context, room string) error {
	return b.sub.subscribe(ctx, room)
}

// Unsubscribe implements Broker, as Redis.Unsubscribe does.
func (b *RedisCluster) Unsubscribe(ctx context.Context, room string) error {
	return b.sub.unsubscribe(room)
}

var _ Syncer = (*RedisCluster)(nil)

// Sync implements Syncer with a PING barrier on the connection to the
// room's master (see subscriber.sync).
func (b *RedisCluster) Sync(ctx context.Context, room string) error { return b.sub.sync(ctx, room) }

// shardedPublishScript is publishScript with SPUBLISH: the message goes to
// the subscribers of the room's shard only. Its keys and the channel share
// the room's slot, so the script runs whole on the room's master.
var shardedPublishScript = redis.NewScript(shardedPublishSource())

func shardedPublishSource() string {
	const from, to = "redis.call('PUBLISH',", "redis.call('SPUBLISH',"
	if strings.Count(publishSource, from) != 1 {
		panic("pubsub: the publish script no longer has exactly one PUBLISH")
	}
	return strings.Replace(publishSource, from, to, 1)
}

// Publish implements Broker: Submit, then Wait. The script runs on the
// master that owns the room's slot (go-redis routes EVALSHA by its first
// key, following MOVED and ASK). While the slot migrates, Redis may answer
// TRYAGAIN: the publish then fails with ErrUnavailable and the sender
// retries.
func (b *RedisCluster) Publish(ctx context.Context, room string, data []byte, opts PublishOptions) (PublishResult, error) {
	return b.Submit(ctx, room, data, opts).Wait(ctx)
}

// Submit implements Submitter: the publish joins the queue of its room's
// lane (cluster_batch.go), in the caller's goroutine, so the order of
// Submit calls is the order of the room's log.
func (b *RedisCluster) Submit(ctx context.Context, room string, data []byte, opts PublishOptions) *Pending {
	if b.isClosed() {
		return Completed(PublishResult{}, fmt.Errorf("pubsub: publish %q: %w", room, ErrClosed))
	}
	r := newPublishReq(ctx, b.keys, room, data, opts, b.cfg.HistorySize, b.cfg.HistoryTTL, b.cfg.IdempotencyTTL, b.ctx.Done())
	r.enqueue(b.lanes[laneOf(room)], b.ctx.Done())
	return &r.Pending
}

// failed asks go-redis to re-read the slot map after a command failed for
// another reason than a Redis error reply (MOVED already does): go-redis
// otherwise keeps sending a dead master's slots to it until its periodic
// reload, a minute later, and a failover would go unnoticed by publishers.
func (b *RedisCluster) failed(err error) {
	var rerr redis.Error
	if errors.As(err, &rerr) && !strings.HasPrefix(err.Error(), "CLUSTERDOWN") {
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	b.client.ReloadState(b.ctx) // lazy: one reload in the background
}

// Close implements Broker. It closes every subscription connection, stops
// the broker's goroutines and waits for them; it does not close the Client.
func (b *RedisCluster) Close() error {
	if b.sub.close() {
		b.cancel()
		b.wg.Wait() // the reloader: its callers, the engine's goroutines, are done
	}
	return nil
}

func (b *RedisCluster) isClosed() bool { return b.sub.isClosed() }

// owner implements topology: the master that owns channel's slot in the
// client's slot map.
func (b *RedisCluster) owner(ctx context.Context, channel string) (string, pubSubber, error) {
	cl, err := b.client.MasterForKey(ctx, channel)
	if err != nil {
		return "", nil, err
	}
	return cl.Options().Addr, cl, nil
}

// stateReloader coalesces re-reads of the cluster's slot map: a caller
// waits for a reload that starts after its request, shared by every caller
// that asked meanwhile.
type stateReloader struct {
	mu      sync.Mutex
	next    chan struct{} // closed when the next reload is done; nil if none is asked for
	running bool
}

// reload implements topology: it re-reads the slot map (CLUSTER SLOTS)
// into the client, and waits for it, up to ctx's end or Close.
func (b *RedisCluster) reload(ctx context.Context) {
	rl := &b.reloads
	rl.mu.Lock()
	if rl.next == nil {
		rl.next = make(chan struct{})
	}
	done := rl.next
	if !rl.running {
		rl.running = true
		b.wg.Add(1) // callers are the engine's goroutines: Close has not reached b.wg.Wait
		go b.reloader()
	}
	rl.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
	case <-b.ctx.Done():
	}
}

func (b *RedisCluster) reloader() {
	defer b.wg.Done()
	rl := &b.reloads
	for {
		rl.mu.Lock()
		done := rl.next
		rl.next = nil
		if done == nil {
			rl.running = false
			rl.mu.Unlock()
			return
		}
		rl.mu.Unlock()
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		// ForEachMaster reloads the slot map synchronously before it runs
		// (ReloadState only schedules a reload).
		err := b.client.ForEachMaster(ctx, func(context.Context, *redis.Client) error { return nil })
		cancel()
		if err != nil {
			b.log.Debug("cluster slot map reload failed", "err", err)
		}
		close(done)
	}
}
