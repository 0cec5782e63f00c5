package ws

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

// The api fields of type int64 or uint64, by their JSON names:
// Message.ts and seq, Join.afterSeq and HistoryRequest.afterSeq,
// Error.retryAfterMs. Keys are matched wherever they occur, at any depth
// (a HistoryResponse's messages), and only with a string value of decimal
// digits: a user called "seq" or a text "123" is never touched, because
// they are values, not keys.
func numericKey(k []byte) bool {
	switch string(k) { // no allocation: the compiler compares the bytes
	case "ts", "seq", "afterSeq", "retryAfterMs":
		return true
	}
	return false
}

// maxDepth bounds the nesting BrowserJSON follows (protojson's chat
// messages nest three deep); deeper input is returned as it is.
const maxDepth = 32

// BrowserJSON returns b with the string values of the numeric keys above
// that hold an integer of magnitude at most 2^53 - 1 written as numbers.
// Everything else, whitespace included, is kept byte for byte. b is
// expected to be protojson output; when it has nothing to rewrite, or is
// not a complete JSON value, it is returned as it is (the same slice). It
// scans the bytes once, allocating only the result: 0.6 µs and one
// allocation for a chat frame here (encoding/json's tokenizer took 15 µs
// and 103; BenchmarkBrowserJSON). It never panics and is safe for
// concurrent use.
func BrowserJSON(b []byte) []byte {
	var (
		out    []byte // nil until the first rewrite
		last   int    // b[last:] is not yet in out
		stack  [maxDepth]byte
		depth  int
		inKey  bool // the next string in this object is a key
		key    []byte
		hasKey bool // key names the value that comes next
	)
	for i := 0; i < len(b); {
		switch c := b[i]; c {
		case ' ', '\t', '\n', '\r', ':':
			i++
		case ',':
			inKey = depth > 0 && stack[depth-1] == '{'
			i++
		case '{', '[':
			if depth == maxDepth {
				return b
			}
			stack[depth] = c
			depth++
			inKey, hasKey = c == '{', false
			i++
		case '}', ']':
			if depth == 0 {
				return b
			}
			depth--
			inKey, hasKey = false, false
			i++
		case '"':
			end, escaped := stringEnd(b, i)
			if end < 0 {
				return b
			}
			switch {
			case inKey:
				key, hasKey, inKey = b[i+1:end-1], !escaped, false
				i = end
				continue
			case hasKey && !escaped && numericKey(key) && safeInteger(b[i+1:end-1]):
				if out == nil {
					out = make([]byte, 0, len(b))
				}
				out = append(out, b[last:i]...)
				out = append(out, b[i+1:end-1]...)
				last = end
			}
			hasKey = false
			i = end
		default: // a number or a literal: up to the next delimiter
			for i < len(b) && !delimiter(b[i]) {
				i++
			}
			hasKey = false
		}
	}
	if out == nil || depth != 0 {
		return b
	}
	return append(out, b[last:]...)
}

// stringEnd returns the index just past the string that starts with the
// quote at b[i], and whether it has escapes; -1 if it is not closed.
func stringEnd(b []byte, i int) (int, bool) {
	escaped := false
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++ // the escaped byte (a \uXXXX's digits are plain bytes)
		case '"':
			return j + 1, escaped
		}
	}
	return -1, escaped
}

func delimiter(c byte) bool {
	switch c {
	case ',', ']', '}', ' ', '\t', '\n', '\r', ':', '"', '{', '[':
		return true
	}
	return false
}

// safeInteger reports whether s is a decimal integer (an optional minus
// and digits, without a leading zero or plus, as protojson writes them)
// of magnitude at most maxSafeInteger.
func safeInteger(s []byte) bool {
	d := s
	if len(d) > 0 && d[0] == '-' {
		d = d[1:]
	}
	if len(d) == 0 || len(d) > 16 || (d[0] == '0' && len(d) > 1) {
		return false
	}
	var v uint64
	for _, c := range d {
		if c < '0' || c > '9' {
			return false
		}
		v = v*10 + uint64(c-'0')
	}
	return v <= maxSafeInteger
}
