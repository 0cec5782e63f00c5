package pubsub

import (
	"context"
	"errors"
	"time"

	"example.com/chat/pkg/history"
)

// ErrUnavailable reports that the bus cannot be reached. Callers surface it
// as a retryable error and never drop the message silently.
var ErrUnavailable = errors.New("pubsub: broker unavailable")

// ErrClosed is returned by a Broker after Close.
var ErrClosed = errors.New("pubsub: broker closed")

// Envelope is one delivery from the bus.
type Envelope struct {
	// Room the message was published to.
	Room string
	// Seq is the message's sequence id in the room's log; zero for ephemeral
	// events, which have none.
	Seq uint64
	// Epoch is the room's log epoch that Seq belongs to; empty when Seq is 0.
	Epoch string
	// Data is the published payload. The Handler may keep it; the Broker
	// does not reuse it.
	Data []byte
}

// Handler receives what the bus delivers.
type Handler interface {
	// HandleMessage is called for every delivery of a subscribed room, in
	// publish order per room, from the Broker's receive loop. It must return
	// quickly and never block: anything slow is handed off.
	HandleMessage(env Envelope)
	// HandleReconnect is called after the Broker lost its subscriptions and
	// re-established them. Deliveries published in between are lost; the
	// handler recovers them from history. It may also fire without a real
	// outage; a spare call must be harmless. The Redis brokers call it
	// from a goroutine of their own, at least once after each outage once
	// the subscriptions are proven back (a few calls when a Cluster's
	// rooms come back at different times), and so after every
	// LostHandler.HandleLost unless the Broker is closed first.
	HandleReconnect()
	// Neither method may call the Broker synchronously: Subscribe waits on
	// the very loop that calls them.
}

// LostHandler is implemented by a Handler that wants to know as soon as the
// broker suspects its subscriptions are gone, before HandleReconnect
// reports them back.
//
// The Redis brokers call HandleLost once per outage of a subscription
// connection (the single Redis's one, or one Cluster master's), when its
// receive loop first marks it lost: a failed read, an unanswered health
// PING, a failed write on it, or Redis resubscribing a new connection. The
// call comes from that receive loop, with no broker lock held: it must not
// block (deliveries wait), and, like the Handler's methods, must not call
// the Broker synchronously. From then until HandleReconnect, deliveries of
// the rooms on that connection may be lost; every HandleLost is followed
// by a HandleReconnect once the connection's rooms are proven back (on the
// same connection, or on the masters that took them over), or by Close. A
// room whose slot alone moves to another master gets no HandleLost; its
// HandleReconnect follows once it is subscribed there.
type LostHandler interface {
	HandleLost()
}

// PublishOptions tune one Publish.
type PublishOptions struct {
	// Ephemeral events are broadcast but not stored: no sequence id, no
	// history, no idempotency.
	Ephemeral bool
	// IdempotencyKey, when not empty, makes a retried publish with the same
	// key (within the broker's idempotency window, minutes) return the
	// original sequence id with Duplicate set, without storing or
	// broadcasting again.
	IdempotencyKey string
	// IdempotencyTTL, when positive, is how long this publish's
	// IdempotencyKey is remembered, in place of the broker's window. The
	// hub gives every publish without a client id a key of its own, only
	// to make go-redis's retry of a pipeline harmless: a short window
	// keeps Redis from holding one key per message for minutes.
	IdempotencyTTL time.Duration
	// Effect, when not nil, makes the publish an event (an edit, delete
	// or reaction) acting on an earlier message of the room: the broker
	// applies it to the message's state in the same atomic step that
	// stores the event, or stores nothing and fails with
	// history.ErrTarget or history.ErrTooManyReactions (errors that are
	// the request's, not ErrUnavailable). Not with Ephemeral.
	Effect *history.Effect
}

// PublishResult says where a stored message landed.
type PublishResult struct {
	// Seq is the sequence id assigned to the message (zero if Ephemeral).
	Seq uint64
	// Epoch of the room's log.
	Epoch string
	// Duplicate is set when IdempotencyKey was already used; Seq is then the
	// id the first publish got.
	Duplicate bool
	// Reacted is set when an OpReact event added its reaction; a toggle
	// that removed it stored Effect.Off instead of the data.
	Reacted bool
}

// Broker publishes to rooms and subscribes this node to them. Methods are
// safe for concurrent use.
type Broker interface {
	// Register sets the Handler for deliveries. The hub calls it once at
	// construction, before any Subscribe; deliveries before that are dropped.
	Register(h Handler)

	// Publish stores data in the room's log and broadcasts it to every
	// subscribed node, atomically: the sequence id order is the delivery
	// order. With opts.Ephemeral it only broadcasts. A returned error means
	// the message may not have been stored; the caller reports it to the
	// sender (who may retry with the same IdempotencyKey).
	Publish(ctx context.Context, room string, data []byte, opts PublishOptions) (PublishResult, error)

	// Subscribe starts deliveries of room to this node. It returns only once
	// the subscription is live: a message published after Subscribe returns
	// is delivered (barring a reconnect, which HandleReconnect reports).
	// Subscribing to a room twice is harmless.
	Subscribe(ctx context.Context, room string) error

	// Unsubscribe stops deliveries of room. Deliveries already in flight may
	// still arrive.
	Unsubscribe(ctx context.Context, room string) error

	// Close releases the broker's connections. Deliveries stop.
	Close() error
}

// Syncer is implemented by a Broker whose deliveries can lag behind the
// log: a Redis subscriber connection holds, in its socket, messages that
// are already stored. The hub syncs before it concludes that what the log
// no longer holds is lost (a node stalled while its rooms passed the
// history size still has those messages on the way). A Broker that
// delivers synchronously (Memory) needs not implement it.
type Syncer interface {
	// Sync returns once every delivery of room that reached this node's
	// subscription before the call has been handed to the Handler. It
	// returns an error wrapping ErrUnavailable when ctx ends first. A
	// subscription lost meanwhile makes it return nil after the new one
	// is proven; the lost deliveries are reported by HandleReconnect. It
	// must not be called from the Handler.
	Sync(ctx context.Context, room string) error
}
