package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"example.com/chat/api"
)

// Everything the client prints that came from the network (user and room
// names, message text, error messages, presence) goes through inert first.
// A terminal obeys what it is sent: ESC starts sequences that move the
// cursor, clear the screen, set the window title or write the clipboard
// (OSC 52), a carriage return or a cursor move overwrites a line, and a
// newline or bidi override makes one user's text pass for a line of
// another's. The server validates names, but the client trusts no one.

// contIndent starts each continuation line of a multi-line message. No
// line of the client's own starts with a space, so a sender cannot make a
// line of their text look like another user's message or an event.
const contIndent = "    | "

// inert returns s safe to print on one line: C0 and C1 control characters
// (newline, carriage return and tab included), ESC and DEL are shown as
// Go escapes (\n, \x1b, \u009b), as are bidi controls and line separators,
// which reorder or break what is displayed; invalid UTF-8 becomes U+FFFD.
// Everything else is kept as sent.
func inert(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return r == utf8.RuneError || unsafeRune(r) })
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for _, r := range s[i:] {
		// range yields RuneError for each invalid byte.
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// unsafeRune reports the characters inert escapes.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f: // C0, DEL, C1
		return true
	case r == '\u061c', r == '\u200e', r == '\u200f', r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
		return true // bidi controls
	case r == '\u2028', r == '\u2029': // line and paragraph separators
		return true
	}
	return false
}

// inertText renders a message's text: each line inert, the lines after
// the first on lines of their own behind contIndent. A CR before a newline
// (CRLF) is dropped; any other CR is shown as \r.
func inertText(text string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		l = inert(strings.TrimSuffix(l, "\r"))
		if i > 0 {
			l = contIndent + l
		}
		lines[i] = l
	}
	return strings.Join(lines, "\n")
}

// printer serialises output lines.
type printer struct {
	mu sync.Mutex
	w  io.Writer
	// seqs shows each message's seq ("#12 ") before its line (/seqs).
	seqs atomic.Bool
}

// printf prints one line; the formatted result is made inert, so values
// from the network (errors, presence) can be passed as they are.
func (p *printer) printf(format string, args ...any) {
	p.line(inert(fmt.Sprintf(format, args...)))
}

// line prints s, which must already be inert, and a newline.
func (p *printer) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	io.WriteString(p.w, s+"\n")
}

// message prints a frame from the node. where, already inert, is the
// label of the room it came from when that is not the current room
// ("#dev", "@bob"), shown in brackets before the line; "" for the
// current room.
//
// withSeq (or /seqs) puts the message's seq before a chat message's line:
// "#12 12:00:00 bob: hi". A message shown as it stands (a replay or a
// page) says it was edited, shows its reactions, and a deleted one is a
// tombstone line; edits, deletes and reactions are lines of their own
// (stateLine).
func (p *printer) message(where string, m *api.Message, withSeq ...bool) {
	ts := time.UnixMilli(m.GetTs()).Format("15:04:05")
	pre := ""
	if where != "" {
		pre = "[" + where + "] "
	}
	seq := ""
	if m.GetSeq() > 0 && (p.seqs.Load() || len(withSeq) > 0 && withSeq[0]) {
		seq = "#" + strconv.FormatUint(m.GetSeq(), 10) + " "
	}
	if l := stateLine(pre, m); l != "" {
		p.line(l)
		return
	}
	switch m.GetKind() {
	case api.Kind_KIND_MESSAGE:
		if m.GetDeleted() {
			p.line(pre + seq + ts + " (a message of " + inert(m.GetUser()) + ", deleted)")
			return
		}
		p.line(pre + seq + ts + " " + inert(m.GetUser()) + ": " + inertText(m.GetText()) + stateSuffix(m))
	case api.Kind_KIND_JOIN:
		p.line("* " + pre + inert(m.GetUser()) + " joined")
	case api.Kind_KIND_LEAVE:
		p.line("* " + pre + inert(m.GetUser()) + " left")
	case api.Kind_KIND_TYPING:
		p.line("* " + pre + inert(m.GetUser()) + " is typing…")
	case api.Kind_KIND_ERROR:
		p.line("! " + pre + inert(m.GetError().GetMessage()))
	case api.Kind_KIND_TRUNCATED:
		p.line("! " + pre + "some messages could not be replayed: " + inert(m.GetText()))
	}
}
