package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"example.com/chat/api"
	"example.com/chat/pkg/client"
)

// Chat state in the terminal: /edit, /delete and /react act on a message
// by its seq, the room's number for it. Lines do not show seqs by
// default (they would clutter every line); /seqs turns a "#N " before
// each message line on and off, and /more, which prints the page of
// older messages before the oldest one shown in the current room, always
// shows them. Edits, deletes and reactions of anyone (this user's own
// too: the stream receives them like anyone's) are lines of their own:
// "* alice edited #12: new text".

// stateLimit is how many older messages /more prints.
const stateLimit = 20

// stateCmdTimeout bounds /edit, /delete, /react and /more.
const stateCmdTimeout = 10 * time.Second

// parseSeq reads a message number as typed: "12" or "#12".
func parseSeq(s string) (uint64, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "#"), 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a message number (the #N that /seqs and /more show)", s)
	}
	return n, nil
}

// stateCommand handles /edit N text, /delete N and /react N emoji in the
// current room. It reports whether line was one of them.
func (s *session) stateCommand(ctx context.Context, line string) bool {
	cmd, rest, _ := strings.Cut(line, " ")
	var usage string
	switch cmd {
	case "/edit":
		usage = "/edit N new text"
	case "/delete":
		usage = "/delete N"
	case "/react":
		usage = "/react N emoji"
	default:
		return false
	}
	num, arg, _ := strings.Cut(strings.TrimSpace(rest), " ")
	arg = strings.TrimSpace(arg)
	if num == "" || (cmd != "/delete" && arg == "") || (cmd == "/delete" && arg != "") {
		s.out.printf("! usage: %s (N is the message's #N: /seqs shows them)", usage)
		return true
	}
	seq, err := parseSeq(num)
	if err != nil {
		s.out.printf("! %s: %s", cmd, err)
		return true
	}
	room := s.current()
	ctx, cancel := context.WithTimeout(ctx, stateCmdTimeout)
	defer cancel()
	switch cmd {
	case "/edit":
		_, err = s.c.Edit(ctx, room, seq, arg)
	case "/delete":
		_, err = s.c.Delete(ctx, room, seq)
	case "/react":
		_, err = s.c.React(ctx, room, seq, arg)
	}
	switch {
	case err == nil:
		// The stream brings the event back: it is shown as anyone's.
	case errors.Is(err, context.DeadlineExceeded):
		s.out.printf("! %s #%d: no node answered within %s", cmd, seq, stateCmdTimeout)
	case errors.Is(err, context.Canceled), errors.Is(err, client.ErrClosed):
	default:
		s.out.printf("! %s #%d: %s", cmd, seq, plain(err))
	}
	return true
}

// seen notes that a message of room (seq of epoch) was shown, for /more.
func (s *session) seen(room, epoch string, seq uint64) {
	if seq == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epochs[room] != epoch {
		s.epochs[room], s.oldest[room] = epoch, seq
		return
	}
	if o := s.oldest[room]; o == 0 || seq < o {
		s.oldest[room] = seq
	}
}

// more prints the page of older messages before the oldest one shown in
// the current room, with their seqs.
func (s *session) more(ctx context.Context) {
	s.mu.Lock()
	room, before, epoch := s.cur, s.oldest[s.cur], s.epochs[s.cur]
	l := s.labelLocked(room)
	s.mu.Unlock()
	if before == 1 {
		s.out.line("* nothing older in " + l)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, stateCmdTimeout)
	defer cancel()
	page, err := s.c.Before(ctx, room, before, epoch, stateLimit)
	switch {
	case errors.Is(err, client.ErrNotConnected):
		s.out.printf("! /more: not connected to a node right now; try again once live")
		return
	case err != nil:
		s.out.printf("! /more: %s", plain(err))
		return
	}
	if page.GetEpoch() != epoch && epoch != "" {
		s.out.line("! the history of " + l + " was reset; these are its newest messages")
	}
	if len(page.GetMessages()) == 0 {
		s.out.line("* nothing older in " + l)
	} else {
		s.out.printf("* %d older messages in %s:", len(page.GetMessages()), l)
		for _, m := range page.GetMessages() {
			s.out.message("", m, true)
		}
	}
	if page.GetFirstSeq() > 0 {
		s.mu.Lock()
		s.epochs[room], s.oldest[room] = page.GetEpoch(), page.GetFirstSeq()
		s.mu.Unlock()
	}
	switch {
	case page.GetAtStart() && page.GetTruncated():
		s.out.line("* that is as far back as " + l + " keeps")
	case page.GetAtStart():
		s.out.line("* that is the start of " + l)
	case len(page.GetMessages()) > 0:
		s.out.line("* /more for older ones")
	}
}

// stateLine renders an edit, delete or reaction event, or "" for another
// kind. pre (inert) is the room's "[#room] " when not the current one.
func stateLine(pre string, m *api.Message) string {
	who, n := inert(m.GetUser()), strconv.FormatUint(m.GetTargetSeq(), 10)
	switch m.GetKind() {
	case api.Kind_KIND_EDIT:
		return "* " + pre + who + " edited #" + n + ": " + inertText(m.GetText())
	case api.Kind_KIND_DELETE:
		return "* " + pre + who + " deleted #" + n
	case api.Kind_KIND_REACTION:
		if m.GetReacted() {
			return "* " + pre + who + " reacted " + inert(m.GetText()) + " to #" + n
		}
		return "* " + pre + who + " took back " + inert(m.GetText()) + " from #" + n
	}
	return ""
}

// stateSuffix is what a message in a replay or page shows of its state:
// " (edited)" and its reactions.
func stateSuffix(m *api.Message) string {
	var b strings.Builder
	if m.GetEdited() {
		b.WriteString(" (edited)")
	}
	if rs := m.GetReactions(); len(rs) > 0 {
		b.WriteString("  [")
		for i, r := range rs {
			if i > 0 {
				b.WriteString(" ")
			}
			fmt.Fprintf(&b, "%s %d", inert(r.GetEmoji()), r.GetCount())
		}
		b.WriteString("]")
	}
	return b.String()
}
