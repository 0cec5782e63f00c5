package main

import (
	"bytes"
	"strconv"
)

// A benchmark message's text is "<pubID>:<counter>:<intendedSendUnixNano>:"
// followed by [a-z] padding up to the configured size.

// appendText appends the text of publisher pub's message ctr, intended for
// Unix time intended (ns), padded to size bytes.
func appendText(dst []byte, pub int, ctr uint64, intended int64, size int) []byte {
	start := len(dst)
	dst = strconv.AppendInt(dst, int64(pub), 10)
	dst = append(dst, ':')
	dst = strconv.AppendUint(dst, ctr, 10)
	dst = append(dst, ':')
	dst = strconv.AppendInt(dst, intended, 10)
	dst = append(dst, ':')
	for i := 0; len(dst)-start < size; i++ {
		dst = append(dst, byte('a'+i%26))
	}
	return dst
}

// parseText parses a benchmark text. ok is false for any other text.
func parseText[T string | []byte](t T) (pub int, ctr uint64, intended int64, ok bool) {
	var i int
	var v uint64
	if v, i, ok = parseUint(t, 0); !ok || v > 1<<31 {
		return 0, 0, 0, false
	}
	pub = int(v)
	if ctr, i, ok = parseUint(t, i); !ok {
		return 0, 0, 0, false
	}
	if v, _, ok = parseUint(t, i); !ok || v > 1<<63-1 {
		return 0, 0, 0, false
	}
	return pub, ctr, int64(v), true
}

// parseUint parses the decimal digits at t[i:] up to a ':' and returns the
// value and the index after the ':'.
func parseUint[T string | []byte](t T, i int) (v uint64, next int, ok bool) {
	start := i
	for ; i < len(t) && t[i] != ':'; i++ {
		c := t[i]
		if c < '0' || c > '9' || i-start >= 19 {
			return 0, 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	if i == start || i >= len(t) {
		return 0, 0, false
	}
	return v, i + 1, true
}

var (
	keyText = []byte(`"text"`)
	keyRoom = []byte(`"room"`)
	keySeq  = []byte(`"seq"`)
)

// frameFields extracts the raw (still JSON-escaped) text and room (nil if
// absent) and the seq (a number on the stream, a string in older nodes'
// frames) of a protojson chat frame such as
//
//	{"user":"p1","text":"3:17:1732563000000000000:xx","ts":1732563000000,"room":"bench0","seq":42,"epoch":"ab12"}
//
// by scanning bytes, without decoding the JSON. ok is false when the frame
// has no text (an error frame, say). seq is 0 when absent. It tolerates
// protojson's optional whitespace, keys in any order, and escaped quotes in
// other fields: a key is a quoted name followed by ':', and an escaped
// quote inside a value can never be followed by the closing quote and ':'.
func frameFields(b []byte) (text, room []byte, seq uint64, ok bool) {
	v, end, found := findValue(b, 0, keyText)
	if !found || len(v) < 2 || v[0] != '"' {
		return nil, nil, 0, false
	}
	text = v[1 : len(v)-1]
	// protojson writes fields in number order (text, room, seq), so look
	// there first.
	rv, rend, found := findValue(b, end, keyRoom)
	if !found {
		rv, _, found = findValue(b, 0, keyRoom)
		rend = end
	}
	if found && len(rv) >= 2 && rv[0] == '"' {
		room = rv[1 : len(rv)-1]
	}
	sv, _, found := findValue(b, rend, keySeq)
	if !found {
		sv, _, found = findValue(b, 0, keySeq)
	}
	if found {
		if len(sv) >= 2 && sv[0] == '"' {
			sv = sv[1 : len(sv)-1]
		}
		for _, c := range sv {
			if c < '0' || c > '9' {
				return text, room, 0, true
			}
			seq = seq*10 + uint64(c-'0')
		}
	}
	return text, room, seq, true
}

// findValue finds key (with its quotes) from b[from:] followed by optional
// whitespace and ':', and returns the raw value after it: a JSON string with
// its quotes, or the bytes up to the next ',', '}' or whitespace. end is the
// index after the value.
func findValue(b []byte, from int, key []byte) (v []byte, end int, ok bool) {
	for from < len(b) {
		i := bytes.Index(b[from:], key)
		if i < 0 {
			return nil, 0, false
		}
		j := skipSpace(b, from+i+len(key))
		from += i + 1
		if j >= len(b) || b[j] != ':' {
			continue // the name appeared inside a value, not as a key
		}
		j = skipSpace(b, j+1)
		if j >= len(b) {
			return nil, 0, false
		}
		if b[j] != '"' {
			k := j
			for k < len(b) && b[k] != ',' && b[k] != '}' && !isSpace(b[k]) {
				k++
			}
			return b[j:k], k, true
		}
		for k := j + 1; ; {
			q := bytes.IndexByte(b[k:], '"')
			if q < 0 {
				return nil, 0, false // unterminated string
			}
			k += q
			// The quote is escaped if an odd number of backslashes
			// precede it.
			bs := 0
			for m := k - 1; m > j && b[m] == '\\'; m-- {
				bs++
			}
			if bs%2 == 0 {
				return b[j : k+1], k + 1, true
			}
			k++
		}
	}
	return nil, 0, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
