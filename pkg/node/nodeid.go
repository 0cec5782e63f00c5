package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// Node id claims. Two nodes started with the same -node-id silently drop
// each other's messages (each takes the other's for its own echo), so a
// node with an explicit id claims it in Redis for as long as it runs:
// key <prefix>node:<id> (chat:node:<id> by default) holds a random owner
// token, set with SET NX PX and refreshed every third of its TTL. A random
// id (no -node-id) cannot collide and claims nothing; neither does the
// single-node memory backend.

// nodeClaimTTL is how long a claim outlives its holder's last refresh: the
// longest a node restarted after a crash waits for its old claim to expire.
const nodeClaimTTL = 10 * time.Second

// nodeClaimPoll is how often a starting node looks at a claim held by
// someone else, to tell a live holder (its claim is refreshed) from a dead
// one (its claim runs out).
const nodeClaimPoll = 250 * time.Millisecond

// errNodeIDInUse is wrapped with the id by nodeClaim.
var errNodeIDInUse = errors.New("is in use by another running node")

func inUse(id string) error {
	return fmt.Errorf("node: node id %q %w (give each node its own -node-id, or none for a random one)", id, errNodeIDInUse)
}

// refreshClaim extends the claim if the token still holds it, takes it
// again if it is gone (Redis restarted, or an outage outlasted the TTL),
// and answers 0 if someone else holds it.
var refreshClaim = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`)

// releaseClaim deletes the claim if the token still holds it.
var releaseClaim = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// nodeClaim is one node's claim on its id. acquire, then keep in a
// goroutine until the node stops, then release.
type nodeClaim struct {
	client redis.UniversalClient
	id     string
	key    string
	token  string
	log    *slog.Logger
	held   bool // acquire succeeded (keep then only refreshes)
}

func newNodeClaim(client redis.UniversalClient, prefix, id string, log *slog.Logger) *nodeClaim {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return &nodeClaim{client: client, id: id, key: prefix + "node:" + id, token: hex.EncodeToString(b[:]), log: log}
}

// acquire claims the id. When another token holds it, acquire watches the
// claim: refreshed means a live node holds it (errNodeIDInUse); expired
// means its holder died, and the claim is taken. Other errors (Redis
// unreachable) are returned as they are: the node then starts anyway, as
// it does without Redis, and keep claims the id once Redis answers.
func (c *nodeClaim) acquire(ctx context.Context) error {
	var (
		holder   string
		lastTTL  time.Duration
		deadline time.Time
	)
	for {
		ok, err := c.client.SetNX(ctx, c.key, c.token, nodeClaimTTL).Result()
		if err != nil {
			return fmt.Errorf("node: claim node id %q: %w", c.id, err)
		}
		if ok {
			c.held = true
			return nil
		}
		v, verr := c.client.Get(ctx, c.key).Result()
		ttl, terr := c.client.PTTL(ctx, c.key).Result()
		switch {
		case errors.Is(verr, redis.Nil):
			continue // expired between the two calls: try again
		case verr != nil || terr != nil:
			return fmt.Errorf("node: claim node id %q: %w", c.id, errors.Join(verr, terr))
		case v == c.token:
			c.held = true
			return nil
		case ttl < 0: // no expiry: set by hand, never ours to take
			return inUse(c.id)
		case v == holder && ttl > lastTTL+nodeClaimPoll/2:
			return inUse(c.id) // refreshed: its holder is alive
		}
		if v != holder {
			holder, deadline = v, time.Now().Add(ttl+time.Second)
		}
		lastTTL = ttl
		if time.Now().After(deadline) {
			return inUse(c.id) // does not expire: refreshed faster than we look
		}
		t := time.NewTimer(nodeClaimPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// keep refreshes the claim until ctx is done. It returns errNodeIDInUse
// when another node took the id meanwhile (which stops this node: one of
// the two must go), and nil when ctx ends.
func (c *nodeClaim) keep(ctx context.Context) error {
	t := time.NewTicker(nodeClaimTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, err := refreshClaim.Run(ctx, c.client, []string{c.key}, c.token, nodeClaimTTL.Milliseconds()).Int()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			c.log.Warn("cannot refresh the node id claim", "err", err)
		case n == 0:
			c.log.Error("node id taken by another running node: stopping", "key", c.key)
			return inUse(c.id)
		default:
			if !c.held {
				c.held = true
				c.log.Info("node id claimed", "key", c.key)
			}
		}
	}
}

// release gives the id up, so that a node restarted with it starts at once.
func (c *nodeClaim) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := releaseClaim.Run(ctx, c.client, []string{c.key}, c.token).Err(); err != nil {
		c.log.Warn("cannot release the node id claim; it expires by itself", "err", err, "ttl", nodeClaimTTL)
	}
}
