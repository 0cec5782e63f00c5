package hub

import (
	"errors"
	"fmt"
)

// ErrorKind classifies an Error for the edges, which map it to a gRPC code or
// a WebSocket close code.
type ErrorKind int

const (
	// KindInvalid is bad client input (InvalidArgument).
	KindInvalid ErrorKind = iota + 1
	// KindTooLarge is input over a size limit (ResourceExhausted).
	KindTooLarge
	// KindUnavailable is a backend outage; the client may retry (Unavailable).
	KindUnavailable
	// KindRateLimited is a send over the user's rate (ResourceExhausted).
	KindRateLimited
	// KindForbidden is an action the caller's identity does not allow
	// (PermissionDenied).
	KindForbidden
	// KindClosed is a call on a closed session or hub (Unavailable).
	KindClosed
	// KindLimit is a connection limit reached (ResourceExhausted).
	KindLimit
	// KindConflict is a request to create what already exists, such as a
	// private room whose name is taken (AlreadyExists, HTTP 409).
	KindConflict
	// KindNotFound is a request about what does not exist (any more), such
	// as an edit of a message the log no longer holds (NotFound, HTTP 404).
	KindNotFound
)

// Error is an error meant for the client: Msg is safe to show.
type Error struct {
	Kind ErrorKind
	Msg  string
	// RetryAfterMs is set on KindRateLimited.
	RetryAfterMs int64
	// Err is the internal cause, for logs only.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("hub: %s: %v", e.Msg, e.Err)
	}
	return "hub: " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

func errorf(kind ErrorKind, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// ErrClosed is returned for calls on a closed hub or session.
var ErrClosed = &Error{Kind: KindClosed, Msg: "session closed"}

// AsError returns err's *Error, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// CloseReason says why a session ended. Its String is the slog attribute and
// the metric label; the edges map it to a gRPC status or a WebSocket close
// code.
type CloseReason int

const (
	// CloseNormal: the client ended the stream.
	CloseNormal CloseReason = iota
	// CloseSlowConsumer: the client's queue overflowed; it was not reading.
	CloseSlowConsumer
	// CloseWriteError: writing to the client failed or timed out.
	CloseWriteError
	// CloseShutdown: the node is draining; reconnect elsewhere.
	CloseShutdown
	// CloseInvalidInput: the client sent something invalid.
	CloseInvalidInput
	// CloseTooLarge: the client sent something over a size limit.
	CloseTooLarge
	// CloseUnavailable: a backend the session needs is down.
	CloseUnavailable
	// CloseUnauthenticated: the client's credentials expired.
	CloseUnauthenticated
	// CloseAbuse: the client kept sending over its rate limit.
	CloseAbuse
)

var closeReasonNames = [...]string{
	CloseNormal:          "normal",
	CloseSlowConsumer:    "slow_consumer",
	CloseWriteError:      "write_error",
	CloseShutdown:        "shutdown",
	CloseInvalidInput:    "invalid_input",
	CloseTooLarge:        "too_large",
	CloseUnavailable:     "unavailable",
	CloseUnauthenticated: "unauthenticated",
	CloseAbuse:           "abuse",
}

func (r CloseReason) String() string {
	if int(r) < len(closeReasonNames) {
		return closeReasonNames[r]
	}
	return "unknown"
}

// flushes reports whether queued frames are written before the transport is
// closed. A slow or broken peer gets no flush: it would only delay the close.
func (r CloseReason) flushes() bool {
	switch r {
	case CloseSlowConsumer, CloseWriteError:
		return false
	}
	return true
}

// CloseReasonForError maps a client-facing error to the reason its session
// closes with.
func CloseReasonForError(err error) CloseReason {
	if e := AsError(err); e != nil {
		switch e.Kind {
		case KindInvalid, KindForbidden, KindConflict, KindNotFound:
			return CloseInvalidInput
		case KindTooLarge:
			return CloseTooLarge
		case KindRateLimited, KindLimit:
			return CloseAbuse
		case KindUnavailable:
			return CloseUnavailable
		}
	}
	return CloseUnavailable
}
