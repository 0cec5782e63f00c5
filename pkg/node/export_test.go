package node

import (
	"context"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// Internals for the external tests (which may import testutil; this
// package's own tests may not: testutil imports node).

var (
	ErrNodeIDInUse = errNodeIDInUse
	NodeClaimTTL   = nodeClaimTTL
	ActiveUsersTTL = activeUsersTTL
)

type NodeClaim = nodeClaim

func NewNodeClaim(client redis.UniversalClient, prefix, id string) *NodeClaim {
	return newNodeClaim(client, prefix, id, slog.New(slog.DiscardHandler))
}

func (c *nodeClaim) Acquire(ctx context.Context) error { return c.acquire(ctx) }
func (c *nodeClaim) Keep(ctx context.Context) error    { return c.keep(ctx) }
func (c *nodeClaim) Release()                          { c.release() }
func (c *nodeClaim) Key() string                       { return c.key }
func (c *nodeClaim) Token() string                     { return c.token }
