package pubsub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replication-aware acknowledgements (RedisConfig.MinReplicas).
//
// Redis replicates asynchronously: a master that crashes right after
// running the publish script may take the message with it, and the
// replica promoted in its place (by Sentinel or Redis Cluster) reuses its
// seq. With MinReplicas the script is followed, in the same pipeline and
// so on the same connection, by WAIT MinReplicas ReplicaTimeout. WAIT
// blocks until that many replicas acknowledged the connection's last
// write (the script), or the timeout; the publish succeeds only if it
// reports enough. A promoted replica is the one with the most recent
// replication offset (Sentinel's choice, and a Cluster replica's election
// rank), so an acknowledged message survives the failover of its master
// as long as no more than MinReplicas-1 replicas fail with it.
//
// A publish that WAIT does not confirm fails with ErrNotReplicated: the
// message may be stored (and delivered) already, or lost in a later
// failover. The sender retries with the same client id; the retry is a
// duplicate whose script refreshes the idempotency key, a write, so its
// WAIT again proves the original is replicated.

// ErrNotReplicated reports that a stored publish was not acknowledged by
// RedisConfig.MinReplicas replicas within ReplicaTimeout. Publish returns
// it together with ErrUnavailable (errors.Is matches both).
var ErrNotReplicated = errors.New("pubsub: not confirmed by enough replicas; the message may or may not be stored")

// defaultReplicaTimeout is ReplicaTimeout's zero-value default.
const defaultReplicaTimeout = 500 * time.Millisecond

func replicaTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		return defaultReplicaTimeout
	}
	return d
}

// appendWait queues WAIT on p when MinReplicas is set, and returns it (nil
// when off).
func (b *Redis) appendWait(ctx context.Context, p redis.Pipeliner) *redis.Cmd {
	if b.cfg.MinReplicas <= 0 {
		return nil
	}
	return p.Do(ctx, "WAIT", b.cfg.MinReplicas, replicaTimeout(b.cfg.ReplicaTimeout).Milliseconds())
}

// checkWait returns nil if wait is nil or reported enough replicas.
func (b *Redis) checkWait(wait *redis.Cmd) error {
	return checkWait(wait, b.cfg.MinReplicas, b.cfg.ReplicaTimeout)
}

func checkWait(wait *redis.Cmd, min int, timeout time.Duration) error {
	if wait == nil {
		return nil
	}
	n, err := wait.Int64()
	if err != nil {
		return fmt.Errorf("%w (WAIT: %w)", ErrNotReplicated, err)
	}
	if n < int64(min) {
		return fmt.Errorf("%w (%d of %d replicas within %v)", ErrNotReplicated, n, min, replicaTimeout(timeout))
	}
	return nil
}

// publishReplicated runs batch (requests whose rooms the master owns) as
// one pipeline of sharded publish scripts and WAIT on the client of that
// master: WAIT has no key, so the cluster client would route it anywhere,
// and it must run on the connection that ran the scripts. go-redis's node
// client does not follow MOVED or ASK: a publish that meets one (a slot
// moving, a failover the slot map does not know yet) fails with
// ErrUnavailable after a slot map reload, and the sender retries.
func (b *RedisCluster) publishReplicated(ctx context.Context, master *redis.Client, batch []*publishReq) []publishRes {
	wait := func(ctx context.Context, p redis.Pipeliner) *redis.Cmd {
		return p.Do(ctx, "WAIT", b.cfg.MinReplicas, replicaTimeout(b.cfg.ReplicaTimeout).Milliseconds())
	}
	check := func(w *redis.Cmd) error { return checkWait(w, b.cfg.MinReplicas, b.cfg.ReplicaTimeout) }
	replies := runPipeline(ctx, master.Pipelined, shardedPublishScript, wait, check, batch)
	for _, r := range replies {
		if r.err != nil && isRedirect(r.err) {
			b.client.ReloadState(b.ctx)
			break
		}
	}
	return replies
}
