package history

import (
	"context"
	"errors"
)

// ErrUnavailable reports that the backing store cannot be reached. Callers
// surface it to clients as a retryable error.
var ErrUnavailable = errors.New("history: store unavailable")

// Entry is one stored message of a room.
type Entry struct {
	// Seq is the room's sequence id of the entry, starting at 1 in each
	// epoch and increasing by one per stored message.
	Seq uint64
	// Data is the stored payload, opaque to this package.
	Data []byte
	// State is what later events did to this entry (a message); nil if
	// none acted on it. Reads fill it; the live delivery of an entry has
	// none.
	State *State
}

// Position says where a room's log stands.
type Position struct {
	// Epoch identifies the room's log. It is created at random with the
	// first message and changes only when the log was lost (expired, evicted,
	// or a Redis restart without persistence); sequence ids restart with it.
	// Empty means the room has no log.
	Epoch string
	// Seq is the id of the newest stored message; zero if none.
	Seq uint64
}

// Page is the answer of a history read.
type Page struct {
	// Entries are oldest first.
	Entries []Entry
	// Position is the room's position at the time of the read.
	Position Position
	// Truncated is true when the caller asked for entries after a sequence
	// id (or in an epoch) that the log no longer covers: Entries is then the
	// newest `limit` entries instead, and the caller must say so to its
	// client. For Before, it is also set when the page reaches the log's
	// oldest entry and older ones were dropped (Oldest above 1).
	Truncated bool
	// Oldest is the id of the oldest entry the log holds; zero when it
	// holds none. Before fills it; Recent and Since may leave it zero.
	Oldest uint64
}

// Store reads a room's log. The hub calls it when a session joins (recent
// history or resume) and when it has to fill a gap in what the bus delivered.
type Store interface {
	// Recent returns the newest limit entries of room, oldest first. A limit
	// of zero or less returns no entries but still the position.
	Recent(ctx context.Context, room string, limit int) (Page, error)

	// Since returns the entries of room with a sequence id above afterSeq,
	// oldest first, at most limit of them (the oldest ones: a caller filling
	// a gap pages forward by calling again after the last id it got).
	//
	// If epoch is not empty and differs from the room's epoch, if the log
	// no longer holds the entry right after afterSeq, or if afterSeq is
	// beyond the log's newest id (the log went back: see Rotator), the page
	// is Truncated and holds the newest limit entries instead.
	Since(ctx context.Context, room, epoch string, afterSeq uint64, limit int) (Page, error)

	// Before returns the newest limit entries of room with an id below
	// beforeSeq (zero: below none, the newest of all), oldest first: the
	// page a client scrolling back asks for. Page.Oldest says where the
	// log starts, so the caller knows when a page reaches it. If epoch is
	// not empty and differs from the room's, the cursor is void: the page
	// is Truncated and holds the newest limit entries. It costs the page,
	// not the log.
	Before(ctx context.Context, room, epoch string, beforeSeq uint64, limit int) (Page, error)

	// Position returns the room's current position without reading entries.
	// The hub polls it to notice a lost tail (the newest message of a room
	// whose live delivery was lost, with nothing after it to reveal the gap).
	Position(ctx context.Context, room string) (Position, error)
}

// Rotator is implemented by a Store whose log can go back within an epoch:
// a Redis failover to a replica that had not received the newest messages,
// or a restart from an AOF that lost its last second. The ids of the lost
// messages are then given to new ones, and a node or client that saw the
// old ones would drop the new ones as duplicates. The hub detects it (a
// position behind what it delivered, or an id whose content changed) and
// rotates the room's epoch, so that every node and every resuming client
// sees the change and is told (KIND_TRUNCATED).
type Rotator interface {
	// Rotate moves room to a new epoch if its epoch is still from, and
	// returns the epoch it has now: the new one, or the one another node
	// rotated to first (nodes that detect one regression together rotate
	// once). The log's entries and the seq counter are kept: after the
	// regression they are a gap-free run again, now in the new epoch. An
	// empty result means the room has no log (its next publish starts an
	// epoch anyway).
	Rotate(ctx context.Context, room, from string) (string, error)
}
