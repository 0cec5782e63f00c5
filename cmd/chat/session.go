package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/client"
)

// helpText is what /help prints.
const helpText = `* commands:
*   /join ROOM     join ROOM and talk there (or go back to it if you are in it)
*   /leave [ROOM]  leave the current room (or ROOM, or @USER)
*   /dm USER       talk with USER directly: starts the conversation (USER is told) or goes back to it
*   /rooms         your conversations, the most recent first; which ones you receive here
*   /who           who is in the current room (asks the node you are connected to)
*   /typing        tell the current room you are typing
*   /more          older messages of the current room, with their #N (again for older ones)
*   /seqs          show or hide each message's #N
*   /edit N text   change the text of your message #N in the current room
*   /delete N      delete your message #N
*   /react N emoji add your emoji to message #N, or take it back
*   /help          this list
*   /quit          leave (also Ctrl-D or Ctrl-C)
*   //text         send "/text" as a message
* anything else not starting with / is sent to the current room, which the prompt names;
* lines from your other rooms start with [#room], from a direct conversation with [@user]`

// session is the client's conversation logic between the screen and the
// chat client: what to print for each frame and state, and what to do
// with each typed line.
type session struct {
	o   *options
	scr screen
	out *printer
	c   *client.Client

	sends sync.WaitGroup // sends in flight

	mu       sync.Mutex
	wasLive  bool            // some connection went live
	down     bool            // a connection failed since the last live
	ownIDs   map[string]bool // client ids of our sends that were acknowledged
	notified map[string]bool // our sends in flight: whether a retry notice was printed
	rooms                    // the current room and the others (rooms.go)
	// oldest is, by room, the seq of the oldest message shown (of
	// epochs[room]): /more prints the page before it.
	oldest map[string]uint64
	epochs map[string]string
}

func newSession(o *options, scr screen) *session {
	return &session{o: o, scr: scr, out: &printer{w: scr}, ownIDs: map[string]bool{}, notified: map[string]bool{},
		oldest: map[string]uint64{}, epochs: map[string]string{},
		rooms: rooms{cur: o.room, joined: []string{o.room}, peers: map[string]string{}, awaiting: map[string]bool{}}}
}

// onState is the client's OnState: it keeps the state line current and
// prints one line per change that matters (the first failure of an
// outage, a reconnect), never one per retry.
func (s *session) onState(st client.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st.Kind {
	case client.Connecting:
		if !s.down {
			s.scr.setState("connecting", inert("connecting to "+st.Addr+"…"))
		}
	case client.Live:
		if !s.wasLive {
			s.out.printf("* live in #%s on %s", s.o.room, st.Addr)
		} else {
			s.out.printf("* reconnected to %s; nothing missed", st.Addr)
		}
		s.wasLive, s.down = true, false
		s.scr.setState("live", "live")
	case client.Reconnecting:
		why := plain(st.Err)
		if !s.down {
			// One line per outage, then the state line only.
			if s.wasLive {
				s.out.printf("! lost the connection to %s: %s; reconnecting by itself", st.Addr, why)
			} else {
				s.out.printf("! cannot connect to %s: %s; retrying", st.Addr, why)
			}
		}
		s.down = true
		s.scr.setState("reconnecting", fmt.Sprintf("reconnecting: %d tries failed, next in %s", st.Failures, st.Retry.Round(100*time.Millisecond)))
	case client.Stopped:
		s.scr.setState("stopped", "stopped")
	}
}

// incoming prints what the node sent. Chat messages of every room the
// client is in are shown, those of rooms other than the current one
// behind their label; join, leave and typing events only for the current
// room (the others' would drown it). A room left with /leave shows
// nothing more, not even what was on its way.
func (s *session) incoming(m *api.Message) {
	if s.roomEvent(m) {
		return
	}
	switch m.GetKind() {
	case api.Kind_KIND_MESSAGE, api.Kind_KIND_TRUNCATED, api.Kind_KIND_EDIT, api.Kind_KIND_DELETE, api.Kind_KIND_REACTION:
		if !s.in(s.roomOf(m)) {
			return
		}
	}
	switch m.GetKind() {
	case api.Kind_KIND_ACK, api.Kind_KIND_LIVE, api.Kind_KIND_HEARTBEAT, api.Kind_KIND_UNSUBSCRIBED, api.Kind_KIND_READ:
		return // own messages are printed by send; live by onState; a /leave said it; read markers are not shown
	case api.Kind_KIND_INVITE:
		s.invited(m)
		return
	case api.Kind_KIND_JOIN, api.Kind_KIND_LEAVE, api.Kind_KIND_TYPING:
		if s.roomOf(m) != s.current() {
			return
		}
	case api.Kind_KIND_MESSAGE:
		s.mu.Lock()
		own := m.GetClientId() != "" && s.ownIDs[m.GetClientId()]
		s.mu.Unlock()
		if own {
			return // our own message, already shown, replayed on a resume
		}
		s.seen(s.roomOf(m), m.GetEpoch(), m.GetSeq())
		s.learnPeer(m)
	case api.Kind_KIND_ERROR:
		if id := m.GetClientId(); id != "" {
			s.mu.Lock()
			_, ours := s.notified[id]
			first := ours && !s.notified[id]
			if first {
				s.notified[id] = true
			}
			s.mu.Unlock()
			if ours && m.GetError().GetCode() == int32(codes.Unavailable) {
				// The client retries it by itself, with the same id:
				// a resend by hand would be a real duplicate.
				if first {
					s.out.printf("! not stored yet (%s); retrying by itself, do not send it again", m.GetError().GetMessage())
				}
				return
			}
			if ours {
				return // send reports it
			}
		}
	}
	s.mu.Lock()
	where := s.whereLocked(s.roomOf(m))
	s.mu.Unlock()
	s.out.message(where, m)
}

// learnPeer notes the other user of a direct conversation from a message
// of theirs, for a conversation joined by its id.
func (s *session) learnPeer(m *api.Message) {
	room, from := s.roomOf(m), m.GetUser()
	if access.KindOfName(room) != access.Direct || from == "" || from == s.o.user {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.peers[room]; !ok {
		s.peers[room] = from
		if s.cur == room {
			s.switchLocked(room) // the prompt names the peer now
		}
	}
}

// command handles one typed line; it reports whether to quit.
func (s *session) command(ctx context.Context, line string) (quit bool) {
	line = strings.TrimSpace(line)
	switch {
	case line == "":
	case line == "/quit" || line == "/exit":
		return true
	case line == "/help" || line == "/?":
		s.out.line(helpText)
	case line == "/typing":
		if _, err := s.c.SendMessage(ctx, &api.Message{Kind: api.Kind_KIND_TYPING, Room: s.current()}); err != nil {
			s.out.printf("! /typing: %s", plain(err))
		}
	case line == "/who":
		s.who(ctx)
	case line == "/rooms":
		s.listRooms(ctx)
	case line == "/more":
		s.more(ctx)
	case line == "/seqs":
		on := !s.out.seqs.Load()
		s.out.seqs.Store(on)
		if on {
			s.out.line("* message lines show their #N now (/seqs again hides them)")
		} else {
			s.out.line("* message lines hide their #N now")
		}
	case s.stateCommand(ctx, line):
	case line == "/join" || strings.HasPrefix(line, "/join "):
		arg := strings.TrimSpace(strings.TrimPrefix(line, "/join"))
		if peer, ok := strings.CutPrefix(arg, "@"); ok && peer != "" {
			s.direct(ctx, peer)
			break
		}
		room, err := s.resolve(arg)
		switch {
		case arg == "":
			s.out.printf("! /join needs a room: /join ROOM (/rooms lists yours)")
		case err != nil:
			s.out.printf("! /join: %s", err)
		default:
			s.join(room)
		}
	case line == "/leave" || strings.HasPrefix(line, "/leave "):
		arg := strings.TrimSpace(strings.TrimPrefix(line, "/leave"))
		room := s.current()
		if arg != "" {
			var err error
			if room, err = s.resolve(arg); err != nil {
				s.out.printf("! /leave: %s", err)
				break
			}
		}
		s.leave(room)
	case line == "/dm" || strings.HasPrefix(line, "/dm "):
		peer := strings.TrimSpace(strings.TrimPrefix(line, "/dm"))
		if peer == "" {
			s.out.printf("! /dm needs a user: /dm USER")
			break
		}
		s.direct(ctx, strings.TrimPrefix(peer, "@"))
	case strings.HasPrefix(line, "//"):
		s.send(ctx, line[1:])
	case strings.HasPrefix(line, "/"):
		cmd, _, _ := strings.Cut(line, " ")
		s.out.printf("! unknown command %s (not sent); /help lists the commands, //text sends \"/text\"", cmd)
	default:
		s.send(ctx, line)
	}
	return false
}

// send sends text in the background (the input stays free) and prints it
// as a message once the node has stored it, or why it was not sent.
func (s *session) send(ctx context.Context, text string) {
	id := fmt.Sprintf("chat-%d-%d", time.Now().UnixNano(), len(text))
	s.mu.Lock()
	s.notified[id] = false
	room := s.cur
	s.mu.Unlock()
	s.sends.Add(1)
	go func() {
		defer s.sends.Done()
		sctx, cancel := context.WithTimeout(ctx, s.o.sendTimeout)
		defer cancel()
		ack, err := s.c.SendMessage(sctx, &api.Message{Room: room, Text: text, ClientId: id})
		s.mu.Lock()
		delete(s.notified, id)
		if err == nil {
			s.ownIDs[id] = true
		}
		s.mu.Unlock()
		if err == nil {
			s.seen(room, ack.GetEpoch(), ack.GetSeq())
		}
		s.mu.Lock()
		where := s.whereLocked(room) // the user may have switched meanwhile
		s.mu.Unlock()
		switch {
		case err == nil:
			ts := ack.GetTs()
			if ts == 0 {
				ts = time.Now().UnixMilli()
			}
			s.out.message(where, &api.Message{Kind: api.Kind_KIND_MESSAGE, User: s.o.user, Text: text, Ts: ts, Seq: ack.GetSeq()})
		case errors.Is(err, context.DeadlineExceeded):
			s.out.printf("! not sent (no node stored it within %s): %s", s.o.sendTimeout, preview(text))
		case errors.Is(err, context.Canceled), errors.Is(err, client.ErrClosed):
			// Quitting.
		case where != "":
			s.out.printf("! not sent to %s: %s: %s", where, plain(err), preview(text))
		default:
			s.out.printf("! not sent: %s: %s", plain(err), preview(text))
		}
	}()
}

// preview is the start of a text, for a "not sent" line.
func preview(text string) string {
	if r := []rune(text); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return text
}

// who prints the current room's presence, asked of the node the client
// is live on (the first address may be dead). A direct conversation has
// its two users.
func (s *session) who(ctx context.Context) {
	s.mu.Lock()
	room, peer, direct := s.cur, s.peers[s.cur], access.KindOfName(s.cur) == access.Direct
	s.mu.Unlock()
	if direct {
		if peer == "" {
			peer = "the other user"
		}
		s.out.printf("* a direct conversation: you and %s", peer)
		return
	}
	addr := s.c.Addr()
	if addr == "" {
		s.out.printf("! /who: not connected to a node right now; try again once live")
		return
	}
	creds := insecure.NewCredentials()
	if s.o.tls != nil {
		creds = credentials.NewTLS(s.o.tls)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		s.out.printf("! /who: %s", plain(err))
		return
	}
	defer cc.Close()
	if s.o.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.o.token)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := api.NewChatClient(cc).Presence(ctx, &api.PresenceRequest{Room: room})
	if err != nil {
		s.out.printf("! /who: %s", plain(err))
		return
	}
	s.out.printf("* %d here: %s", r.GetCount(), strings.Join(r.GetUsers(), ", "))
}

// plain says what went wrong in words for a person: the gRPC code's
// meaning and the node's own message, without the transport's wrapping.
func plain(err error) string {
	if err == nil {
		return ""
	}
	var pe *client.PermanentError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	msg := err.Error()
	// The status inside the wrapping: status.FromError of a wrapped
	// status keeps its code but puts the whole chain in its message.
	var (
		st *status.Status
		ok bool
		se interface{ GRPCStatus() *status.Status }
	)
	if errors.As(err, &se) && se.GRPCStatus() != nil {
		st, ok = se.GRPCStatus(), true
	} else {
		st, ok = status.FromError(err)
	}
	if ok {
		msg = st.Message()
		switch st.Code() {
		case codes.Unauthenticated:
			return "the node refused the token: " + msg
		case codes.PermissionDenied:
			return "not allowed: " + msg
		case codes.InvalidArgument:
			return "refused: " + msg
		case codes.DeadlineExceeded:
			return "no answer in time"
		case codes.ResourceExhausted:
			return "over a limit: " + msg
		case codes.Unavailable:
			return unavailable(msg)
		}
	}
	return strings.TrimPrefix(msg, "client: ")
}

// unavailable words a gRPC Unavailable: a dial failure says what the
// dialler said (connection refused, no such host), anything else is the
// node's message.
func unavailable(msg string) string {
	for _, c := range []struct{ in, out string }{
		{"connection refused", "connection refused (is the node running, and is this its gRPC port?)"},
		{"no such host", "unknown host"},
		{"produced zero addresses", "unknown host"},
		{"i/o timeout", "no answer (timed out)"},
		{"network is unreachable", "network unreachable"},
		{"no route to host", "no route to host"},
		{"connection reset", "the connection was reset"},
		{"error reading server preface", "the other side does not speak gRPC (is this the HTTP port?)"},
		{"tls:", "TLS failed: " + msg},
		{"authentication handshake failed", "TLS failed: " + msg},
	} {
		if strings.Contains(msg, c.in) {
			return c.out
		}
	}
	if strings.Contains(msg, "transport") || strings.Contains(msg, "connection error") {
		return "connection lost"
	}
	return msg
}
