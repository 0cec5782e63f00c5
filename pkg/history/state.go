package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// State is what the events of a room (edits, deletes, reactions) did to one
// of its messages. The events are entries of the log like messages, with
// their own sequence ids; the store keeps each message's State beside the
// log so that a read shows the current message without replaying them.
// Entry.State is nil for a message no event acted on.
type State struct {
	// Rev is the sequence id of the last event applied.
	Rev uint64
	// Text is the message's text after its last edit; valid when Edited.
	Text string
	// Edited is set once the message was edited.
	Edited bool
	// Deleted is set once the message was deleted: Text, Edited and
	// Reactions are then cleared, and further events are refused.
	Deleted bool
	// Reactions counts the users reacting with each emoji; no zero counts.
	Reactions map[string]int
}

// stateJSON is State as the Redis scripts keep it (Lua's cjson reads and
// writes it): {"v":"<rev>","t":"<text>","e":true,"d":true,"r":{"<emoji>":n}}.
type stateJSON struct {
	Rev       string         `json:"v"`
	Text      string         `json:"t,omitempty"`
	Edited    bool           `json:"e,omitempty"`
	Deleted   bool           `json:"d,omitempty"`
	Reactions map[string]int `json:"r,omitempty"`
}

// parseState decodes a state kept by the Redis scripts.
func parseState(b []byte) (*State, error) {
	var j stateJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("history: malformed message state: %w", err)
	}
	rev, err := strconv.ParseUint(j.Rev, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("history: malformed message state: rev %q", j.Rev)
	}
	st := &State{Rev: rev, Text: j.Text, Edited: j.Edited, Deleted: j.Deleted}
	for emoji, n := range j.Reactions {
		if n > 0 {
			if st.Reactions == nil {
				st.Reactions = make(map[string]int, len(j.Reactions))
			}
			st.Reactions[emoji] = n
		}
	}
	return st, nil
}

// Op is what an event does to the message it names.
type Op int

const (
	// OpNone: a plain message.
	OpNone Op = iota
	// OpEdit replaces the message's text with Effect.Text.
	OpEdit
	// OpDelete turns the message into a tombstone.
	OpDelete
	// OpReact toggles Effect.User's reaction Effect.Text (an emoji).
	OpReact
)

// Effect is what a stored event does to an earlier message of its room. The
// publish path (pubsub.PublishOptions.Effect) applies it to the message's
// State in the same atomic step that appends the event, so that the state
// and the log never disagree, and refuses the event (storing nothing) with
// ErrTarget when the message cannot take it.
//
// Who may act on a message (its author, for edits and deletes) is the
// caller's check: the store does not parse messages.
type Effect struct {
	Op Op
	// Target is the sequence id of the message acted on; Epoch the epoch
	// it belongs to (the event is refused if the room moved on).
	Target uint64
	Epoch  string
	// Text is the new text (OpEdit) or the emoji (OpReact).
	Text string
	// User is who reacts (OpReact).
	User string
	// Off is the event's data when an OpReact toggle removes the user's
	// reaction; the publish's own data is the event that adds it. The
	// store picks one, since only it knows the reaction's current state.
	Off []byte
}

// ErrTarget refuses an event whose message is not in the log (never was,
// trimmed, or of another epoch) or was deleted.
var ErrTarget = errors.New("history: the message is not in the log or was deleted")

// MaxReactions bounds the distinct emoji on one message; a reaction with a
// new emoji past it is refused with ErrTarget's sibling ErrTooManyReactions.
const MaxReactions = 32

// ErrTooManyReactions refuses a new emoji on a message that has
// MaxReactions already.
var ErrTooManyReactions = errors.New("history: the message has too many different reactions")

// apply returns the state of a message after e, the event with id rev:
// st is its state before (nil: untouched). reacts says whether e.User
// reacts with e.Text before the event (OpReact only): the toggle then
// removes the reaction, else adds it. The caller records the toggle.
func (e Effect) apply(st *State, rev uint64, reacts bool) (*State, error) {
	next := &State{Rev: rev}
	if st != nil {
		if st.Deleted {
			return nil, ErrTarget
		}
		*next = *st
		next.Rev = rev
	}
	switch e.Op {
	case OpEdit:
		next.Text, next.Edited = e.Text, true
	case OpDelete:
		next = &State{Rev: rev, Deleted: true}
	case OpReact:
		counts := make(map[string]int, len(next.Reactions)+1)
		for k, v := range next.Reactions {
			counts[k] = v
		}
		switch {
		case reacts:
			if counts[e.Text]--; counts[e.Text] <= 0 {
				delete(counts, e.Text)
			}
		case counts[e.Text] == 0 && len(counts) >= MaxReactions:
			return nil, ErrTooManyReactions
		default:
			counts[e.Text]++
		}
		next.Reactions = counts
		if len(counts) == 0 {
			next.Reactions = nil
		}
	default:
		return nil, fmt.Errorf("history: unknown effect %d", e.Op)
	}
	return next, nil
}

// Read names a room and a reader's marker in it, for Summaries.
type Read struct {
	Room string
	// Epoch and Seq are the reader's marker: messages up to Seq of Epoch
	// are read. A zero Seq, or another epoch than the room's, reads
	// nothing.
	Epoch string
	Seq   uint64
}

// Summary is a room's position and what a reader has not read of it.
type Summary struct {
	Position Position
	// Unread counts the messages (not events) the log holds after the
	// reader's marker.
	Unread int
}

// Summarizer is implemented by stores that count unread messages without
// reading the log: from the position, the log's length and an index of its
// events. Every Store of this package implements it.
type Summarizer interface {
	// Summaries returns the summary of each read, by index. A room
	// without a log has the zero Summary.
	Summaries(ctx context.Context, reads []Read) ([]Summary, error)
}

// unread counts the messages after marker (seq, epoch) in a log at pos
// whose oldest held id is oldest (0: empty), given events, the number of
// events held with an id above the marker. It is the rule both stores
// share.
func unread(pos Position, oldest uint64, r Read, eventsAfter int) int {
	if pos.Epoch == "" || oldest == 0 {
		return 0
	}
	from := oldest - 1 // everything held is unread
	if r.Epoch == pos.Epoch && r.Seq > from {
		from = r.Seq
	}
	if from >= pos.Seq {
		return 0
	}
	n := int(pos.Seq-from) - eventsAfter
	return max(n, 0)
}
