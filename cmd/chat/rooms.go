package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/client"
)

// The client's rooms, the way irssi and weechat users expect them: one
// stream carries all of them, one of them is current (the prompt names
// it, typed lines go there), and lines from the others are shown with
// the room before them: [#dev] for a room, [@bob] for the direct
// conversation with bob (never its dm.<hash> id). The room of -room is
// the stream's first room and stays until /quit.
//
// The session's fields below are guarded by session.mu.
type rooms struct {
	cur      string            // the current room
	joined   []string          // the rooms this client is in, the least recently current first: cur is last
	peers    map[string]string // direct conversation → the other user
	awaiting map[string]bool   // joined rooms whose first KIND_LIVE is to be announced
}

// roomName is the node's rule for room names (hub.NormalizeRoom; the page
// checks it too), checked here only to say so before asking.
var roomName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// labelLocked is how room is shown: #room, or @peer for a direct
// conversation whose peer is known (inert: names come from the network).
// s.mu must be held.
func (s *session) labelLocked(room string) string {
	if p, ok := s.peers[room]; ok {
		return "@" + inert(p)
	}
	if access.KindOfName(room) == access.Direct {
		return inert(room) // a conversation whose other user is not known yet
	}
	return "#" + inert(room)
}

func (s *session) label(room string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.labelLocked(room)
}

// promptNameLocked names the current room on the state line:
// "alice@general", or "alice→@bob" in a direct conversation. s.mu must be
// held.
func (s *session) promptNameLocked() string {
	if p, ok := s.peers[s.cur]; ok {
		return inert(s.o.user) + "→@" + inert(p)
	}
	return inert(s.o.user) + "@" + inert(s.cur)
}

// switchLocked makes room (one of joined) current and shows it on the
// state line. s.mu must be held.
func (s *session) switchLocked(room string) {
	if i := slices.Index(s.joined, room); i >= 0 && i != len(s.joined)-1 {
		s.joined = append(slices.Delete(s.joined, i, i+1), room)
	}
	s.cur = room
	s.scr.setName(s.promptNameLocked())
}

// in reports whether the client is in room.
func (s *session) in(room string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.joined, room)
}

// current returns the current room.
func (s *session) current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// whereLocked is the prefix of a line from room: "" for the current room,
// else its label. s.mu must be held.
func (s *session) whereLocked(room string) string {
	if room == "" || room == s.cur {
		return ""
	}
	return s.labelLocked(room)
}

// roomOf is the room a frame from the node belongs to (the primary when
// it names none).
func (s *session) roomOf(m *api.Message) string {
	if r := m.GetRoom(); r != "" {
		return r
	}
	return s.o.room
}

// removeLocked forgets room and, if it was current, switches back to the
// room that was current before it. It returns the room now current, and whether room was
// joined. s.mu must be held.
func (s *session) removeLocked(room string) (now string, was bool) {
	i := slices.Index(s.joined, room)
	if i < 0 {
		return s.cur, false
	}
	s.joined = slices.Delete(s.joined, i, i+1)
	delete(s.awaiting, room)
	if s.cur == room {
		s.switchLocked(s.joined[len(s.joined)-1])
	}
	return s.cur, true
}

// resolve turns what was typed after /join or /leave into a room: "dev"
// or "#dev" is the room, "@bob" the direct conversation with bob if this
// client knows it.
func (s *session) resolve(arg string) (string, error) {
	arg = strings.TrimSpace(arg)
	if peer, ok := strings.CutPrefix(arg, "@"); ok {
		s.mu.Lock()
		defer s.mu.Unlock()
		for room, p := range s.peers {
			if p == peer && slices.Contains(s.joined, room) {
				return room, nil
			}
		}
		return "", fmt.Errorf("no direct conversation with %s here (/dm %s starts or opens it)", peer, peer)
	}
	room := strings.TrimPrefix(arg, "#")
	if !roomName.MatchString(room) {
		return "", fmt.Errorf("%q is not a room name: 1-64 of A-Z a-z 0-9 _ - . starting with a letter or digit", room)
	}
	return room, nil
}

// join subscribes the stream to room (unless it has it) and makes it
// current. Its history follows, then "* live in #room"; a refusal is
// said when the node answers (incoming).
func (s *session) join(room string) {
	s.mu.Lock()
	if slices.Contains(s.joined, room) {
		if s.cur == room {
			s.mu.Unlock()
			s.out.printf("* already in %s", s.label(room))
			return
		}
		s.switchLocked(room)
		l := s.labelLocked(room)
		s.mu.Unlock()
		s.out.line("* now in " + l)
		return
	}
	s.joined = append(s.joined, room)
	s.awaiting[room] = true
	s.switchLocked(room)
	l := s.labelLocked(room)
	s.mu.Unlock()
	s.out.line("* joining " + l + " (now the current room; /leave leaves it)")
	if err := s.c.Subscribe(room); err != nil {
		// The client subscribes it on the next connection.
		s.out.printf("! %s: %s; it is joined once reconnected", l, plain(err))
	}
}

// leave unsubscribes the stream from room.
func (s *session) leave(room string) {
	s.mu.Lock()
	l := s.labelLocked(room)
	switch {
	case room == s.o.room:
		s.mu.Unlock()
		s.out.line("! " + l + " is the room this client joined with (-room): it stays until /quit; /join another room to talk there")
		return
	case !slices.Contains(s.joined, room):
		s.mu.Unlock()
		s.out.line("! not in " + l + "; /rooms lists your conversations")
		return
	}
	now, _ := s.removeLocked(room)
	nl := s.labelLocked(now)
	s.mu.Unlock()
	if err := s.c.Unsubscribe(room); err != nil {
		s.out.printf("! leaving %s: %s", l, plain(err))
	}
	s.out.line("* left " + l + "; now in " + nl)
}

// direct opens the direct conversation with peer: the node names it (and
// tells peer if it is new), the stream subscribes to it, and it becomes
// current.
func (s *session) direct(ctx context.Context, peer string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := s.c.Direct(ctx, peer)
	switch {
	case errors.Is(err, client.ErrNotConnected):
		s.out.printf("! /dm: not connected to a node right now; try again once live")
		return
	case err != nil:
		s.out.printf("! /dm %s: %s", peer, plain(err))
		return
	}
	room := r.GetRoom()
	s.mu.Lock()
	s.peers[room] = peer
	s.mu.Unlock()
	if r.GetCreated() {
		s.out.printf("* started a direct conversation with %s (they are told)", peer)
	}
	s.join(room)
}

// listRooms prints the user's conversations, the most recent first, and
// marks the ones this stream receives and the current one.
func (s *session) listRooms(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	convs, err := s.c.Conversations(ctx, 0)
	switch {
	case errors.Is(err, client.ErrNotConnected):
		s.out.printf("! /rooms: not connected to a node right now; try again once live")
		return
	case err != nil:
		s.out.printf("! /rooms: %s", plain(err))
		return
	}
	type row struct{ label, kind, last, mark string }
	var rows []row
	s.mu.Lock()
	listed := map[string]bool{}
	for _, c := range convs {
		if c.GetKind() == "direct" && c.GetPeer() != "" {
			s.peers[c.GetRoom()] = c.GetPeer()
		}
	}
	mark := func(room string) string {
		switch {
		case room == s.cur:
			return "receiving, current"
		case slices.Contains(s.joined, room):
			return "receiving"
		}
		return ""
	}
	for _, c := range convs {
		listed[c.GetRoom()] = true
		last := "no messages yet"
		if c.GetLastSeq() > 0 {
			last = fmt.Sprintf("last #%d", c.GetLastSeq())
		}
		rows = append(rows, row{s.labelLocked(c.GetRoom()), inert(c.GetKind()), last, mark(c.GetRoom())})
	}
	// Rooms this client is in that the list does not hold (a public room
	// it has not posted in).
	for _, room := range s.joined {
		if !listed[room] {
			rows = append(rows, row{s.labelLocked(room), "", "", mark(room)})
		}
	}
	s.mu.Unlock()
	if len(convs) == 0 {
		s.out.line("* no conversations yet (rooms you post in, are invited to or talk in directly)")
	} else {
		s.out.printf("* %d conversations, the most recent first:", len(convs))
	}
	w := 0
	for _, r := range rows {
		w = max(w, len([]rune(r.label)))
	}
	for _, r := range rows {
		pad := strings.Repeat(" ", w-len([]rune(r.label)))
		line := strings.TrimRight(fmt.Sprintf("*   %s%s  %-7s  %-16s  %s", r.label, pad, r.kind, r.last, r.mark), " ")
		s.out.line(line)
	}
	s.out.line("* /join ROOM or /dm USER goes to one")
}

// invited prints an invitation from the personal channel: a direct
// conversation someone started, or a private room someone added the user
// to.
func (s *session) invited(m *api.Message) {
	room, from := m.GetRoom(), m.GetUser()
	if access.KindOfName(room) == access.Direct {
		s.mu.Lock()
		s.peers[room] = from
		s.mu.Unlock()
		s.out.printf("* %s started a direct conversation — /dm %s", from, from)
		return
	}
	s.out.printf("* %s invited you to #%s — /join %s", from, room, room)
}

// roomEvent handles what the node says about one of the joined rooms
// (other than the primary): its KIND_LIVE, a refusal of it, or its end
// (KIND_UNSUBSCRIBED). It reports whether m was handled.
func (s *session) roomEvent(m *api.Message) bool {
	room := s.roomOf(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	if room == s.o.room || !slices.Contains(s.joined, room) {
		return false
	}
	switch m.GetKind() {
	case api.Kind_KIND_LIVE:
		if s.awaiting[room] {
			delete(s.awaiting, room)
			s.out.line("* live in " + s.labelLocked(room))
		}
		return true
	case api.Kind_KIND_ERROR:
		// The client drops a room the node refused: an error without
		// a client id naming a room it no longer has is that refusal.
		if m.GetClientId() != "" || s.c == nil || slices.Contains(s.c.Rooms(), room) {
			return false
		}
		l := s.labelLocked(room)
		now, _ := s.removeLocked(room)
		s.out.line("! cannot join " + l + ": " + inert(plain(statusOf(m.GetError()))) + "; back in " + s.labelLocked(now))
		return true
	case api.Kind_KIND_UNSUBSCRIBED:
		// Not on request (a /leave forgot the room first): the node
		// took it away, e.g. the owner removed the user.
		l := s.labelLocked(room)
		now, _ := s.removeLocked(room)
		why := m.GetText()
		if why == "" {
			why = "unsubscribed by the node"
		}
		s.out.line("! no longer in " + l + ": " + inert(why) + "; now in " + s.labelLocked(now))
		return true
	}
	return false
}

// statusOf is an error event's error as a gRPC status error, for plain.
func statusOf(e *api.Error) error {
	return status.Error(codes.Code(e.GetCode()), e.GetMessage())
}
