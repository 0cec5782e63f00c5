package history

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// DefaultPrefix is the key prefix used when a deployment names none.
const DefaultPrefix = "chat:"

// Keys is the Redis layout of the rooms of one deployment. The publish path
// (pubsub.Redis) writes it and the Redis Store reads it, so both build their
// names here.
//
// Every key and the channel of a room carry the hash tag {room}, so that a
// room's keys live in one Redis Cluster slot and one Lua script may touch
// them all. Room names are validated by the hub as [A-Za-z0-9_.-]: they hold
// no braces and no glob characters.
//
//	<prefix>{<room>}:meta        hash: "epoch" (random id of the log), "seq" (last id)
//	<prefix>{<room>}:log         list: "<seq>:<data>", newest first (LPUSH), capped by LTRIM
//	<prefix>{<room>}:idem:<key>  string: "<epoch>:<seq>" of the first publish with <key>
//	<prefix>{<room>}:state       hash: "<seq>" -> state JSON of a message events acted on
//	<prefix>{<room>}:evs         sorted set: the ids of the events the log holds (score = id)
//	<prefix>{<room>}:rx:<epoch>:<seq>  set: "<emoji>\n<user>", who reacts to message seq
//	<prefix>{<room>}:ch          pub/sub channel of the room
//	<prefix>{<room>}:access      hash: "kind" (private, direct), "owner" (see pkg/access)
//	<prefix>{<room>}:members     set: the members of a private room or direct conversation
//	<prefix>user:{<uid>}:rooms   sorted set: a user's conversations by last activity (ms);
//	                             <uid> is UserID(user)
//	<prefix>user:{<uid>}:read    hash: room -> "<epoch>:<seq>", the user's read markers
//
// The zero Keys uses DefaultPrefix.
type Keys struct {
	prefix string
}

// NewKeys returns the layout under prefix, a deployment's namespace such as
// "chat:" or "staging:chat:". An empty prefix means DefaultPrefix.
func NewKeys(prefix string) Keys {
	return Keys{prefix: prefix}
}

// Prefix returns the deployment prefix all names start with.
func (k Keys) Prefix() string {
	if k.prefix == "" {
		return DefaultPrefix
	}
	return k.prefix
}

// base returns "<prefix>{<room>}:", the start of every name of room.
func (k Keys) base(room string) string {
	return k.Prefix() + "{" + room + "}:"
}

// Meta returns the key of room's meta hash (fields "epoch" and "seq").
func (k Keys) Meta(room string) string { return k.base(room) + "meta" }

// Log returns the key of room's capped list of entries, newest first, each
// "<seq>:<data>".
func (k Keys) Log(room string) string { return k.base(room) + "log" }

// Idempotency returns the key remembering the publish of room made with the
// idempotency key idemKey.
func (k Keys) Idempotency(room, idemKey string) string {
	return k.base(room) + "idem:" + idemKey
}

// State returns the key of room's hash of message states (see State),
// by sequence id.
func (k Keys) State(room string) string { return k.base(room) + "state" }

// Events returns the key of room's sorted set of event ids (edits, deletes,
// reactions) that its log holds, trimmed with it.
func (k Keys) Events(room string) string { return k.base(room) + "evs" }

// Reactions returns the key of the set of who reacts with what to message
// seq of room's epoch, each member "<emoji>\n<user>".
func (k Keys) Reactions(room, epoch string, seq uint64) string {
	return k.base(room) + "rx:" + epoch + ":" + strconv.FormatUint(seq, 10)
}

// Channel returns the pub/sub channel of room.
func (k Keys) Channel(room string) string { return k.base(room) + "ch" }

// RoomOfChannel is the inverse of Channel: it returns the room of a channel
// name, and false if the name is not a room channel of this layout.
func (k Keys) RoomOfChannel(channel string) (string, bool) {
	rest, ok := strings.CutPrefix(channel, k.Prefix()+"{")
	if !ok {
		return "", false
	}
	room, ok := strings.CutSuffix(rest, "}:ch")
	if !ok || room == "" || strings.ContainsAny(room, "{}") {
		return "", false
	}
	return room, true
}

// Access returns the key of room's access record (pkg/access): absent for
// a public room.
func (k Keys) Access(room string) string { return k.base(room) + "access" }

// Members returns the key of the member set of a private room or a direct
// conversation.
func (k Keys) Members(room string) string { return k.base(room) + "members" }

// UserRooms returns the key of user's conversations, a sorted set of room
// names scored by the user's last activity there (unix ms).
func (k Keys) UserRooms(user string) string {
	return k.Prefix() + "user:{" + UserID(user) + "}:rooms"
}

// UserReads returns the key of user's read markers, a hash of room names
// to "<epoch>:<seq>" (see pkg/access).
func (k Keys) UserReads(user string) string {
	return k.Prefix() + "user:{" + UserID(user) + "}:read"
}

// UserID returns a fixed-size id of a user name fit for keys and room
// names (user names are any visible Unicode, up to 64 characters): the
// first 20 bytes of its SHA-256, in hex.
func UserID(user string) string {
	sum := sha256.Sum256([]byte(user))
	return hex.EncodeToString(sum[:20])
}
