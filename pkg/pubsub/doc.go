// Package pubsub is the bus between nodes: it publishes a room's messages and
// delivers them to every node subscribed to the room.
//
// Stored messages are published through the log (see Broker.Publish): the
// sequence id is assigned, the message appended to the room's capped history
// and broadcast in one atomic step, so history order and live order agree.
// Ephemeral events (typing, join, leave) skip the log. A Submitter takes a
// publish without its caller waiting (Submit, answered through a Pending):
// a sender's messages share round trips, and submit order is log order.
//
// Deliveries reach the single Handler registered with Register. The receive
// loop calls it inline and never waits on anything else, so a Handler must not
// block. Deliveries can still be lost (a Redis reconnect, a dropped
// subscriber connection); Handler.HandleReconnect says when, and the caller
// recovers from history by sequence id. A Handler that also implements
// LostHandler hears of a loss as soon as the broker suspects it.
//
// Redis and RedisCluster receive through one subscriber engine
// (subscribe.go, shard.go: its doc states the lock order and who owns
// which goroutine); a single Redis is a cluster of one shard.
package pubsub
