package ws

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
)

// Browsers read the JSON a node sends with JSON.parse, and protojson writes
// 64-bit integers as strings ("ts":"1732563000000"): new Date(m.ts) was
// Invalid Date, and m.seq + 1 was "41" + "1". BrowserJSON is what the
// WebSocket stream (textFrame) and the REST gateway (pkg/node) send instead:
// the same bytes, except that the integer fields below are JSON numbers
// while they are exact in a JavaScript number. Input is not affected:
// protojson accepts a 64-bit integer as a number or as a string.

// maxSafeInteger is Number.MAX_SAFE_INTEGER, 2^53 - 1: every integer up to
// it is exact in a float64. A seq past it stays a string.
const maxSafeInteger = 1<<53 - 1

// numericKeys are the api fields of type int64 or uint64, by their JSON
// names: Message.ts and seq, Join.afterSeq and HistoryRequest.afterSeq,
// Error.retryAfterMs. Keys are matched wherever they occur, at any depth
// (a HistoryResponse's messages), and only with a string value of decimal
// digits: a user called "seq" or a text "123" is never touched, because
// they are values, not keys.
var numericKeys = map[string]bool{"ts": true, "seq": true, "afterSeq": true, "retryAfterMs": true}

// BrowserJSON returns b with the string values of numericKeys that hold an
// integer of magnitude at most 2^53 - 1 written as numbers. Everything else,
// whitespace included, is kept byte for byte. b is expected to be protojson
// output; anything that is not valid JSON, or has nothing to rewrite, is
// returned as it is (the same slice). It never panics and is safe for
// concurrent use.
func BrowserJSON(b []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type span struct{ start, end int }
	var edits []span
	// The decoder does not say whether a string is an object key: track
	// it. expectKey[i] is true when the next token in the i-th open
	// object is a key.
	var stack []bool // per open container: true for an object
	expectKey := false
	key := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return b
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, true)
				expectKey = true
			case '[':
				stack = append(stack, false)
				expectKey = false
			case '}', ']':
				if len(stack) == 0 {
					return b
				}
				stack = stack[:len(stack)-1]
				expectKey = len(stack) > 0 && stack[len(stack)-1]
			}
			key = ""
			continue
		case string:
			if expectKey {
				key, expectKey = t, false
				continue
			}
			if numericKeys[key] && safeInteger(t) {
				end := int(dec.InputOffset())
				start := end - len(t) - 2
				// The value's raw bytes must be the quoted digits
				// themselves (no escapes), or it is left alone.
				if start >= 0 && b[start] == '"' && b[end-1] == '"' && string(b[start+1:end-1]) == t {
					edits = append(edits, span{start, end})
				}
			}
		}
		// A value ends: in an object, a key comes next.
		key = ""
		expectKey = len(stack) > 0 && stack[len(stack)-1]
	}
	if len(edits) == 0 || len(stack) > 0 { // nothing to do, or truncated
		return b
	}
	out := make([]byte, 0, len(b))
	last := 0
	for _, e := range edits {
		out = append(out, b[last:e.start]...)
		out = append(out, b[e.start+1:e.end-1]...)
		last = e.end
	}
	return append(out, b[last:]...)
}

// safeInteger reports whether s is a decimal integer (an optional minus
// and digits, without a leading zero or plus, as protojson writes them)
// of magnitude at most maxSafeInteger.
func safeInteger(s string) bool {
	d := s
	if len(d) > 0 && d[0] == '-' {
		d = d[1:]
	}
	if len(d) == 0 || len(d) > 16 || (d[0] == '0' && len(d) > 1) {
		return false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	v, err := strconv.ParseUint(d, 10, 64)
	return err == nil && v <= maxSafeInteger
}
