// Package access decides who may read and post in which room, and keeps
// what that needs: the member lists of private rooms and direct
// conversations, and each user's list of conversations.
//
// A room is one of three kinds, told by its name and its access record:
//
//   - Public (no record): anyone may subscribe, read and post (a token's
//     rooms claim may still narrow it). Every room of the seed contract
//     is public.
//   - Private (a record with an owner): only members may; the owner (the
//     creator, a JWT subject) adds and removes them. A room is made
//     private when it is created, never later: a public room with a log
//     cannot be taken over.
//   - Direct: the conversation of two users, named DirectRoom(a, b) (the
//     same for both orders); only those two may. Names starting with
//     "dm." are reserved for it.
//
// Every user also has a personal channel, PersonalRoom(user), which only
// that user may subscribe to; the server publishes on it. Names starting
// with "u." are reserved for it.
//
// A Store is safe for concurrent use. Its errors wrap ErrUnavailable when
// the backing store cannot be reached.
package access

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"example.com/chat/pkg/history"
)

// Errors of a Store.
var (
	// ErrUnavailable: the backing store cannot be reached; retry.
	ErrUnavailable = errors.New("access: store unavailable")
	// ErrExists: the room already exists (it has a log or a record).
	ErrExists = errors.New("access: room exists")
	// ErrNotFound: the room is not private (no record).
	ErrNotFound = errors.New("access: no such private room")
	// ErrForbidden: the caller may not do this (not the owner).
	ErrForbidden = errors.New("access: forbidden")
	// ErrReserved: the name is reserved for direct conversations or
	// personal channels.
	ErrReserved = errors.New("access: reserved room name")
)

// Kind is a room's kind.
type Kind int

const (
	Public Kind = iota
	Private
	Direct
	Personal
)

func (k Kind) String() string {
	switch k {
	case Public:
		return "public"
	case Private:
		return "private"
	case Direct:
		return "direct"
	case Personal:
		return "personal"
	}
	return "unknown"
}

// Reserved name prefixes.
const (
	directPrefix   = "dm."
	personalPrefix = "u."
)

// DirectRoom returns the name of the direct conversation of users a and b
// (normalised names), the same for both orders: "dm." and 40 hex digits
// of a hash of the pair.
func DirectRoom(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return directPrefix + history.UserID(strconv.Itoa(len(a))+":"+a+b) // length first: no two pairs meet
}

// PersonalRoom returns the name of user's personal channel.
func PersonalRoom(user string) string { return personalPrefix + history.UserID(user) }

// KindOfName returns the kind a name reserves (Direct, Personal), or
// Public for a name that reserves nothing (which may still be Private).
func KindOfName(room string) Kind {
	switch {
	case strings.HasPrefix(room, directPrefix):
		return Direct
	case strings.HasPrefix(room, personalPrefix):
		return Personal
	}
	return Public
}

// Decision is what a Store says about a user and a room.
type Decision struct {
	Kind Kind
	// Member: the user may subscribe, read and post. Always true for a
	// public room.
	Member bool
	// Owner of a private room; empty otherwise.
	Owner string
}

// Store keeps the access records. Users are normalised names
// (hub.NormalizeUser), rooms validated names (hub.NormalizeRoom).
type Store interface {
	// Check returns room's kind and whether user may use it.
	Check(ctx context.Context, room, user string) (Decision, error)
	// CreatePrivate makes room a private room owned by owner, who becomes
	// its first member. It fails with ErrExists if the room has a log or a
	// record, and ErrReserved for a reserved name.
	CreatePrivate(ctx context.Context, room, owner string) error
	// AddMember adds user to the private room; only its owner (by) may.
	// Adding a member again is harmless.
	AddMember(ctx context.Context, room, by, user string) error
	// RemoveMember removes user from the private room; only its owner may,
	// and the owner cannot be removed.
	RemoveMember(ctx context.Context, room, by, user string) error
	// Members lists a private room's or direct conversation's members,
	// sorted.
	Members(ctx context.Context, room string) ([]string, error)
	// Direct returns the direct conversation of a and b, recording its
	// two members on first use, and reports whether it is new.
	Direct(ctx context.Context, a, b string) (room string, created bool, err error)
	// Touch records that user took part in room at ms (unix milliseconds):
	// it is one of their conversations.
	Touch(ctx context.Context, user, room string, ms int64) error
	// Conversations returns up to limit of user's conversations (the
	// rooms Touch recorded: the hub touches a room for a user who posts
	// in it, starts it or is added to it), the most recent first; at most
	// MaxConversations are kept. limit <= 0 means all.
	Conversations(ctx context.Context, user string, limit int) ([]string, error)
	// Markers keeps the users' read markers (marker.go).
	Markers
}
