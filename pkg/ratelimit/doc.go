// Package ratelimit decides whether one more event (a chat message, a
// typing event) may pass for a key (a user name) under a Limit: a rate per
// second plus a burst, the same meaning as a token bucket's refill rate and
// size. It owns no policy about what is limited; the hub asks it once per
// send.
//
// # Contract
//
// A Limiter answers Allow(ctx, key, now) with a Decision: Allowed, or
// refused with RetryAfter, the time after which the same request would
// pass if nothing else were sent for key. A refused request costs nothing:
// only admitted ones are charged. Keys are independent. Implementations
// are safe for concurrent use, and a Limiter shared by several callers
// (several sessions, several nodes) gives them one budget between them.
//
// The algorithm is GCRA (the generic cell rate algorithm): per key, one
// number, the theoretical arrival time (TAT) of the next event at the
// steady rate. With interval T = 1/Rate and tolerance tau = Burst*T, an
// event at now passes when max(TAT, now)+T-tau <= now, and then sets TAT to
// max(TAT, now)+T. It admits exactly what a token bucket of Burst tokens
// refilled at Rate would, and a key whose TAT is in the past is the same as
// a key never seen, which is why idle keys can be forgotten.
//
// # Implementations
//
// Memory keeps the TATs of one process in a bounded map: the limit of a
// single node, or of a deployment without Redis. Entries whose bucket is
// full again are swept as the map grows; past MaxKeys, arbitrary entries
// are forgotten (those keys get a full bucket), so memory stays bounded
// whatever keys an attacker invents.
//
// Redis keeps the TAT of each key in Redis, so that every node of a
// deployment charges the same budget: a user spreading its sends over
// three nodes gets the budget of one. One Lua script reads the TAT, decides
// and writes it back in one round trip (EVALSHA, loading the script on
// NOSCRIPT), with a TTL of the time until the bucket is full, after which
// the key is gone. The script uses the Redis server's clock (TIME), never
// the nodes', so skew between nodes does not matter; the now passed to
// Allow only drives the local bucket below. Each key is one Redis key with
// a hash tag, so it works on Redis Cluster.
//
// A key checked back to back (a client flooding a pipelined stream) gets
// leases: Redis admits several events in one call (the script's third
// argument, doubling up to 32, and up to a sixteenth of the burst, while
// the key keeps spending them within 200 ms), and the node spends them
// without a round trip. They are
// charged to the shared budget when granted, so the deployment never
// admits more than the limit; a key that sends now and then always asks
// for one (see lease.go).
//
// Redis also keeps a local Memory of the same Limit, charged with what
// Redis admits on this node. It serves two purposes:
//
//   - A pre-check. This node's admitted events are a subset of the
//     deployment's, so when the local bucket refuses, Redis would too, and
//     the request is refused without a round trip. Likewise, a refusal from
//     Redis holds until its RetryAfter (other nodes can only push it later),
//     so the key is refused locally until then. A client hammering a node
//     past its limit costs Redis about one call per retry hint, not one per
//     attempt. (Both hold up to the jitter of the round trip; a constant
//     clock offset between the node and Redis does not matter, since GCRA
//     only compares differences.)
//   - The fallback: when Redis fails (an error or a timeout, not the
//     caller's cancelled ctx), Redis fails open to the local bucket and
//     keeps using it for RetryInterval before asking Redis again. An outage
//     of the limiter must not stop chat, and the local bucket still bounds
//     what one node admits (at most the number of nodes times the budget,
//     deployment-wide). The outage is logged once, when it starts and when
//     it ends, and counted in chat_ratelimit_redis_errors_total.
//
// Both implementations are prometheus.Collectors; whoever owns a registry
// (the hub, for its SendLimiter) may register them.
package ratelimit
