package hub

import (
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	"example.com/chat/api"
)

// MaxErrorText is the most bytes of an error message the edges send a
// client (in a status, an error frame or a close reason's source).
const MaxErrorText = 512

// ClientText returns s fit to send a client: valid UTF-8 (invalid bytes
// become U+FFFD) and at most max bytes, cut on a character boundary, with
// "…" marking the cut (counted in max). Every text that reaches a client
// and may quote its input goes through it: a frame or close reason cut in
// the middle of a character is invalid UTF-8, which protobuf refuses to
// encode and browsers treat as a protocol error.
func ClientText(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	const ellipsis = "…"
	cut := max - len(ellipsis)
	tail := ellipsis
	if cut < 0 {
		cut, tail = max, ""
	}
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + tail
}

// Code is the gRPC code of e's kind, which every edge uses: the gRPC
// status, the code of a WebSocket error frame, the REST status (through
// the gateway).
func (e *Error) Code() codes.Code {
	switch e.Kind {
	case KindInvalid:
		return codes.InvalidArgument
	case KindTooLarge, KindRateLimited, KindLimit:
		return codes.ResourceExhausted
	case KindForbidden:
		return codes.PermissionDenied
	case KindConflict:
		return codes.AlreadyExists
	case KindNotFound:
		return codes.NotFound
	default:
		return codes.Unavailable
	}
}

// Proto is e as the wire's Error, its text fit for the client.
func (e *Error) Proto() *api.Error {
	return &api.Error{Code: int32(e.Code()), Message: ClientText(e.Msg, MaxErrorText), RetryAfterMs: e.RetryAfterMs}
}
