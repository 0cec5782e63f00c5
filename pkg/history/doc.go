// Package history is the read side of a room's log: the capped, ordered list
// of a room's recent messages, each with its per-room sequence id, and the
// room's position (epoch and last id).
//
// Writes happen in the publish path (pubsub.Broker.Publish), which assigns
// the sequence id, appends, trims and broadcasts in one atomic step, so that
// history order and live order are the same order. This package owns the
// storage layout both sides share (Keys for Redis, Memory for the embedded
// default).
//
// Implementations are safe for concurrent use.
package history
