package integration_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/node"
)

// stream is a raw stream with a reader collecting every frame.
type stream struct {
	t    *testing.T
	r    raw
	mu   sync.Mutex
	got  []*api.Message
	err  error
	done chan struct{}
}

// openStream joins first on a raw stream to addr and collects its frames.
func openStream(t *testing.T, ctx context.Context, tr client.Transport, addr string, first *api.Message) *stream {
	t.Helper()
	return collect(t, dialRaw(t, ctx, tr, addr), first)
}

// collect joins first on r and collects its frames.
func collect(t *testing.T, r raw, first *api.Message) *stream {
	t.Helper()
	s := &stream{t: t, r: r, done: make(chan struct{})}
	if err := s.r.Send(first); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(s.done)
		for {
			m, err := s.r.Recv()
			s.mu.Lock()
			if err != nil {
				s.err = err
				s.mu.Unlock()
				return
			}
			s.got = append(s.got, m)
			s.mu.Unlock()
		}
	}()
	return s
}

// frames returns the frames of the kinds given (all if none), in order.
func (s *stream) frames(kinds ...api.Kind) []*api.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*api.Message
	for _, m := range s.got {
		if len(kinds) == 0 || slices.Contains(kinds, m.GetKind()) {
			out = append(out, m)
		}
	}
	return out
}

// wait waits until cond holds on the stream's frames.
func (s *stream) wait(what string, cond func([]*api.Message) bool) []*api.Message {
	s.t.Helper()
	var got []*api.Message
	chattest.Eventually(s.t, 20*time.Second, func() error {
		got = s.frames()
		if cond(got) {
			return nil
		}
		s.mu.Lock()
		err := s.err
		s.mu.Unlock()
		return fmt.Errorf("%s: not yet (%d frames, stream error %v)", what, len(got), err)
	})
	return got
}

func has(kind api.Kind, pred func(*api.Message) bool) func([]*api.Message) bool {
	return func(ms []*api.Message) bool {
		return slices.ContainsFunc(ms, func(m *api.Message) bool { return m.GetKind() == kind && pred(m) })
	}
}

// view is a client's picture of a room: each message as the client shows
// it, built from what it received, applying edits, deletes and reactions
// by the rule the proto states (an event applies when its seq is above the
// message's rev).
type view struct {
	msgs   map[uint64]*api.Message
	counts map[uint64]map[string]int
	rev    map[uint64]uint64
	events []uint64 // the event seqs applied, in order
}

func newView() *view {
	return &view{msgs: map[uint64]*api.Message{}, counts: map[uint64]map[string]int{}, rev: map[uint64]uint64{}}
}

func (v *view) apply(m *api.Message) {
	switch m.GetKind() {
	case api.Kind_KIND_MESSAGE:
		if m.GetSeq() == 0 {
			return
		}
		v.msgs[m.GetSeq()] = m
		v.rev[m.GetSeq()] = m.GetRev()
		c := map[string]int{}
		for _, r := range m.GetReactions() {
			c[r.GetEmoji()] = int(r.GetCount())
		}
		v.counts[m.GetSeq()] = c
	case api.Kind_KIND_EDIT, api.Kind_KIND_DELETE, api.Kind_KIND_REACTION:
		t := m.GetTargetSeq()
		orig := v.msgs[t]
		if orig == nil || m.GetSeq() <= v.rev[t] {
			return
		}
		v.rev[t] = m.GetSeq()
		v.events = append(v.events, m.GetSeq())
		n := &api.Message{User: orig.GetUser(), Text: orig.GetText(), Seq: t, Edited: orig.GetEdited(), Deleted: orig.GetDeleted()}
		switch m.GetKind() {
		case api.Kind_KIND_EDIT:
			n.Text, n.Edited = m.GetText(), true
		case api.Kind_KIND_DELETE:
			n.Text, n.Deleted, n.Edited = "", true, false
			v.counts[t] = map[string]int{}
		case api.Kind_KIND_REACTION:
			if m.GetReacted() {
				v.counts[t][m.GetText()]++
			} else if v.counts[t][m.GetText()]--; v.counts[t][m.GetText()] <= 0 {
				delete(v.counts[t], m.GetText())
			}
		}
		v.msgs[t] = n
	}
}

// String is the view's messages in seq order, as text, flags and counts.
func (v *view) String() string {
	var b bytes.Buffer
	keys := make([]uint64, 0, len(v.msgs))
	for k := range v.msgs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		m := v.msgs[k]
		fmt.Fprintf(&b, "#%d %s %q edited=%v deleted=%v %v\n", k, m.GetUser(), m.GetText(), m.GetEdited(), m.GetDeleted(), v.counts[k])
	}
	return b.String()
}

func viewOf(frames []*api.Message) *view {
	v := newView()
	for _, m := range frames {
		v.apply(m)
	}
	return v
}

// TestEditsDeletesReactionsInOneOrder: three node processes on a real
// Redis. alice (gRPC, node 1), bob (WebSocket, node 2) and dave (gRPC,
// node 3) receive changes; carol (node 3) did not ask for them and a seed
// client (node 2) cannot. alice posts, then edits and deletes her
// messages while alice and bob toggle reactions; dave was away (he left
// after the first messages) and resumes from his point; eve joins at the
// end and only replays. Every client with changes ends with the same
// messages, edits, tombstones and reaction counts, and the live ones saw
// the events in one order; carol and the seed client got messages only.
func TestEditsDeletesReactionsInOneOrder(t *testing.T) {
	t.Parallel()
	bin := buildNode(t)
	rs := testutil.StartRedis(t)
	_, nodes := startProcs(t, bin, rs.Addr(), "ed", 3)
	ctx := t.Context()
	room := newRoom()
	join := func(user string, j *api.Join) *api.Message { return &api.Message{User: user, Room: room, Join: j} }
	changes := &api.Join{Events: true, Changes: true}
	alice := openStream(t, ctx, client.GRPC, nodes[0].GRPC, join("alice", changes))
	bob := openStream(t, ctx, client.WebSocket, nodes[1].HTTP, join("bob", changes))
	carol := openStream(t, ctx, client.GRPC, nodes[2].GRPC, join("carol", &api.Join{Events: true}))
	seed := chattest.JoinSeed(t, ctx, nodes[1].GRPC, "seedy", room)
	dctx, dcancel := context.WithCancel(ctx)
	dave := openStream(t, dctx, client.GRPC, nodes[2].GRPC, join("dave", changes))
	for _, s := range []*stream{alice, bob, carol, dave} {
		s.wait("live", has(api.Kind_KIND_LIVE, func(*api.Message) bool { return true }))
	}
	var own []*api.Message
	send := func(s *stream, m *api.Message) *api.Message {
		t.Helper()
		m.Room = room
		if m.ClientId == "" {
			m.ClientId = fmt.Sprintf("c%d", time.Now().UnixNano())
		}
		if err := s.r.Send(m); err != nil {
			t.Fatal(err)
		}
		frames := s.wait("answer to "+m.ClientId, func(ms []*api.Message) bool {
			return slices.ContainsFunc(ms, func(f *api.Message) bool {
				return f.GetClientId() == m.ClientId && (f.GetKind() == api.Kind_KIND_ACK || f.GetKind() == api.Kind_KIND_ERROR)
			})
		})
		i := slices.IndexFunc(frames, func(f *api.Message) bool {
			return f.GetClientId() == m.ClientId && (f.GetKind() == api.Kind_KIND_ACK || f.GetKind() == api.Kind_KIND_ERROR)
		})
		if a := frames[i]; a.GetKind() == api.Kind_KIND_ACK && m.GetKind() == api.Kind_KIND_MESSAGE && s == alice {
			// The sender has its own message from the ack, as
			// clients do.
			own = append(own, &api.Message{User: "alice", Text: m.GetText(), Seq: a.GetSeq()})
		}
		return frames[i]
	}
	for i := 1; i <= 3; i++ {
		if a := send(alice, &api.Message{Text: fmt.Sprintf("m%d", i)}); a.GetKind() != api.Kind_KIND_ACK || a.GetSeq() != uint64(i) {
			t.Fatalf("send %d: %v", i, a)
		}
	}
	dave.wait("m3", has(api.Kind_KIND_MESSAGE, func(m *api.Message) bool { return m.GetSeq() == 3 }))
	dcancel()
	<-dave.done
	davePos := viewOf(dave.frames())
	epoch := alice.frames(api.Kind_KIND_ACK)[0].GetEpoch()

	steps := []struct {
		by *stream
		m  *api.Message
	}{
		{alice, &api.Message{Kind: api.Kind_KIND_EDIT, TargetSeq: 1, Text: "m1, corrected"}},
		{bob, &api.Message{Kind: api.Kind_KIND_REACTION, TargetSeq: 1, Text: "👍"}},
		{alice, &api.Message{Kind: api.Kind_KIND_REACTION, TargetSeq: 1, Text: "👍"}},
		{alice, &api.Message{Text: "m7"}},
		{bob, &api.Message{Kind: api.Kind_KIND_REACTION, TargetSeq: 2, Text: "🎉"}},
		{alice, &api.Message{Kind: api.Kind_KIND_DELETE, TargetSeq: 2}},
		{bob, &api.Message{Kind: api.Kind_KIND_REACTION, TargetSeq: 1, Text: "👍"}}, // off again
		{alice, &api.Message{Kind: api.Kind_KIND_EDIT, TargetSeq: 1, Text: "m1, final"}},
		{bob, &api.Message{Kind: api.Kind_KIND_REACTION, TargetSeq: 7, Text: "❤️"}},
	}
	for i, st := range steps {
		if a := send(st.by, st.m); a.GetKind() != api.Kind_KIND_ACK || a.GetSeq() != uint64(4+i) {
			t.Fatalf("step %d %v: %v", i, st.m, a)
		}
	}
	// Refused: an edit of a deleted message, a reaction to it, bob's
	// edit of alice's message; none takes an id.
	for _, bad := range []struct {
		by   *stream
		m    *api.Message
		code codes.Code
	}{
		{alice, &api.Message{Kind: api.Kind_KIND_EDIT, TargetSeq: 2, Text: "x"}, codes.NotFound},
		{bob, &api.Message{Kind: api.Kind_KIND_REACTION, TargetSeq: 2, Text: "👍"}, codes.NotFound},
		{bob, &api.Message{Kind: api.Kind_KIND_EDIT, TargetSeq: 3, Text: "mine now"}, codes.PermissionDenied},
		{bob, &api.Message{Kind: api.Kind_KIND_DELETE, TargetSeq: 3}, codes.PermissionDenied},
		{alice, &api.Message{Kind: api.Kind_KIND_EDIT, TargetSeq: 99, Text: "x"}, codes.NotFound},
	} {
		if a := send(bad.by, bad.m); a.GetKind() != api.Kind_KIND_ERROR || codes.Code(a.GetError().GetCode()) != bad.code {
			t.Fatalf("%v: %v, want an error %s", bad.m, a, bad.code)
		}
	}
	const last = 12
	want := `#1 alice "m1, final" edited=true deleted=false map[👍:1]
#2 alice "" edited=false deleted=true map[]
#3 alice "m3" edited=false deleted=false map[]
#7 alice "m7" edited=false deleted=false map[❤️:1]
`
	var orders [][]uint64
	for _, s := range []*stream{alice, bob} {
		s.wait("the last event", has(api.Kind_KIND_REACTION, func(m *api.Message) bool { return m.GetSeq() == last }))
		v := viewOf(append(slices.Clone(own), s.frames()...))
		if s != alice {
			v = viewOf(s.frames())
		}
		if got := v.String(); got != want {
			t.Errorf("live client's view:\n%swant\n%s", got, want)
		}
		orders = append(orders, v.events)
	}
	if !slices.Equal(orders[0], orders[1]) || len(orders[0]) != 8 {
		t.Errorf("live clients applied events %v and %v; want the same 8", orders[0], orders[1])
	}
	// dave resumes from his point, on another node.
	dave2 := openStream(t, ctx, client.WebSocket, nodes[0].HTTP, join("dave", &api.Join{Events: true, Changes: true, AfterSeq: 3, Epoch: epoch}))
	dave2.wait("live", has(api.Kind_KIND_LIVE, func(*api.Message) bool { return true }))
	dv := davePos
	for _, m := range dave2.frames() {
		dv.apply(m)
	}
	if got := dv.String(); got != want {
		t.Errorf("resumed client's view:\n%swant\n%s", got, want)
	}
	// eve only replays.
	eve := openStream(t, ctx, client.GRPC, nodes[1].GRPC, join("eve", changes))
	eve.wait("live", has(api.Kind_KIND_LIVE, func(*api.Message) bool { return true }))
	if got := viewOf(eve.frames()).String(); got != want {
		t.Errorf("late joiner's view:\n%swant\n%s", got, want)
	}
	// carol (no changes) and the seed client: messages only.
	time.Sleep(300 * time.Millisecond)
	for _, m := range carol.frames() {
		if k := m.GetKind(); k == api.Kind_KIND_EDIT || k == api.Kind_KIND_DELETE || k == api.Kind_KIND_REACTION {
			t.Fatalf("carol did not ask for changes and got %v", m)
		}
	}
	if got := seqs(seed.Stored()); !slices.Equal(got, []uint64{1, 2, 3, 7}) {
		t.Errorf("seed client got seqs %v; want the messages 1 2 3 7", got)
	}
	// A late joiner without changes sees the edited text, not the
	// deleted message, and no events.
	frank := openStream(t, ctx, client.GRPC, nodes[2].GRPC, join("frank", &api.Join{Events: true}))
	frank.wait("live", has(api.Kind_KIND_LIVE, func(*api.Message) bool { return true }))
	var ftexts []string
	for _, m := range frank.frames(api.Kind_KIND_MESSAGE) {
		ftexts = append(ftexts, fmt.Sprintf("%d:%s", m.GetSeq(), m.GetText()))
	}
	if fmt.Sprint(ftexts) != "[1:m1, final 3:m3 7:m7]" {
		t.Errorf("a replay without changes: %v", ftexts)
	}
}

// TestScrollbackThroughALongRoom: three node processes on a real Redis,
// -log-size 12000. A room gets 10,000 messages; then, while a sender keeps
// posting to it, a reader pages back from the newest message to the start
// of the log with gRPC History on the three nodes in turn (before_seq =
// the previous page's first_seq): every message once, in order, with the
// text it was sent with, and the last page says at_start.
func TestScrollbackThroughALongRoom(t *testing.T) {
	t.Parallel()
	bin := buildNode(t)
	rs := testutil.StartRedis(t)
	_, nodes := startProcs(t, bin, rs.Addr(), "sb", 3, "-log-size", "12000", "-history-size", "250", "-max-inflight-sends", "256")
	ctx := t.Context()
	room := newRoom()
	const n = 10000
	w := openStream(t, ctx, client.GRPC, nodes[0].GRPC, &api.Message{User: "writer", Room: room, Join: &api.Join{Events: true, NoHistory: true}})
	w.wait("live", has(api.Kind_KIND_LIVE, func(*api.Message) bool { return true }))
	for i := 1; i <= n; i++ {
		if err := w.r.Send(&api.Message{Text: fmt.Sprintf("t%d", i), ClientId: fmt.Sprintf("w%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	sent := map[uint64]string{} // seq -> text
	chattest.Eventually(t, 120*time.Second, func() error {
		acks := w.frames(api.Kind_KIND_ACK, api.Kind_KIND_ERROR)
		if len(acks) < n {
			return fmt.Errorf("%d of %d answers", len(acks), n)
		}
		for _, a := range acks {
			if a.GetKind() != api.Kind_KIND_ACK {
				t.Fatalf("send refused: %v", a)
			}
			sent[a.GetSeq()] = "t" + a.GetClientId()[1:]
		}
		return nil
	})
	// New messages keep coming while the reader scrolls.
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cc := grpcClient(t, nodes[1].GRPC)
		for i := 0; sctx.Err() == nil; i++ {
			_, _ = cc.Send(sctx, &api.SendRequest{Room: room, Message: &api.Message{User: "late", Text: fmt.Sprintf("new%d", i)}})
			time.Sleep(5 * time.Millisecond)
		}
	}()
	readers := []api.ChatClient{grpcClient(t, nodes[0].GRPC), grpcClient(t, nodes[1].GRPC), grpcClient(t, nodes[2].GRPC)}
	var got []*api.Message
	before, pages := uint64(0), 0
	for ; ; pages++ {
		page, err := readers[pages%3].History(ctx, &api.HistoryRequest{Room: room, BeforeSeq: before, Limit: 250})
		if err != nil {
			t.Fatalf("page %d before %d: %v", pages, before, err)
		}
		if page.GetTruncated() {
			t.Fatalf("page %d before %d truncated: the log holds the whole room", pages, before)
		}
		if pages == 0 {
			// Only what was there when the reader started matters; the
			// newest page may hold the late sender's first messages.
			kept := page.GetMessages()[:0]
			for _, m := range page.GetMessages() {
				if m.GetSeq() <= n {
					kept = append(kept, m)
				}
			}
			page.Messages = kept
		}
		got = append(slices.Clone(page.GetMessages()), got...)
		if page.GetAtStart() {
			break
		}
		if page.GetFirstSeq() == 0 || (before != 0 && page.GetFirstSeq() >= before) {
			t.Fatalf("page %d before %d: first_seq %d does not go back", pages, before, page.GetFirstSeq())
		}
		before = page.GetFirstSeq()
	}
	stop()
	wg.Wait()
	if len(got) != n {
		t.Fatalf("scrolled back through %d messages in %d pages, want %d", len(got), pages+1, n)
	}
	for i, m := range got {
		if m.GetSeq() != uint64(i+1) || m.GetText() != sent[m.GetSeq()] {
			t.Fatalf("message %d is seq %d %q, want seq %d %q", i, m.GetSeq(), m.GetText(), i+1, sent[uint64(i+1)])
		}
	}
	t.Logf("10,000 messages in %d pages of up to 250, while new ones arrived", pages+1)
}

func grpcClient(t *testing.T, addr string) api.ChatClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return api.NewChatClient(cc)
}

// TestReadMarkersAcrossDevices: ann's two devices, on two of three node
// processes on a real Redis, and bob, who writes to their direct
// conversation. A read on one device reaches the other on its personal
// channel, and ann's conversations (asked on any node) agree on her
// marker and unread count; edits are not counted; a marker never moves
// back. The first device's node is SIGKILLed: it comes back on the third
// node, marks the rest read, and both devices and every node agree.
func TestReadMarkersAcrossDevices(t *testing.T) {
	t.Parallel()
	bin := buildNode(t)
	rs := testutil.StartRedis(t)
	procs, nodes := startProcs(t, bin, rs.Addr(), "rm", 3)
	ctx := t.Context()
	bobc := grpcClient(t, nodes[2].GRPC)
	dm, err := bobc.Direct(ctx, &api.DirectRequest{User: "bob", Peer: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	room := dm.GetRoom()
	personal := func(home node.Addrs, tr client.Transport) *stream {
		addr := home.GRPC
		if tr == client.WebSocket {
			addr = home.HTTP
		}
		s := openStream(t, ctx, tr, addr, &api.Message{User: "ann", Room: room, Join: &api.Join{Events: true, Personal: true, Changes: true}})
		s.wait("live", has(api.Kind_KIND_LIVE, func(m *api.Message) bool { return m.GetRoom() == room }))
		return s
	}
	phone := personal(nodes[0], client.GRPC)
	laptop := personal(nodes[1], client.WebSocket)
	var epoch string
	for i := 1; i <= 20; i++ {
		m, err := bobc.Send(ctx, &api.SendRequest{Room: room, Message: &api.Message{User: "bob", Text: fmt.Sprintf("b%d", i)}})
		if err != nil {
			t.Fatal(err)
		}
		epoch = m.GetEpoch()
	}
	sawRead := func(s *stream, seq uint64) {
		t.Helper()
		s.wait(fmt.Sprintf("KIND_READ %d", seq), has(api.Kind_KIND_READ, func(m *api.Message) bool {
			return m.GetRoom() == room && m.GetSeq() == seq && m.GetUser() == "ann"
		}))
	}
	killed := false
	agree := func(readSeq uint64, unread int32) {
		t.Helper()
		for i, n := range nodes {
			if i == 0 && killed {
				continue
			}
			r, err := grpcClient(t, n.GRPC).Conversations(ctx, &api.ConversationsRequest{User: "ann"})
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(r.GetConversations(), func(c *api.Conversation) bool { return c.GetRoom() == room })
			if i < 0 {
				t.Fatalf("ann's conversations on %s lack %s: %v", n.GRPC, room, r)
			}
			c := r.GetConversations()[i]
			if c.GetReadSeq() != readSeq || c.GetUnread() != unread || c.GetPeer() != "bob" {
				t.Fatalf("ann's conversation on %s: %v, want read %d unread %d", n.GRPC, c, readSeq, unread)
			}
		}
	}
	agree(0, 20)
	start := time.Now()
	if err := phone.r.Send(&api.Message{Kind: api.Kind_KIND_READ, Room: room, Seq: 10, Epoch: epoch}); err != nil {
		t.Fatal(err)
	}
	sawRead(laptop, 10)
	t.Logf("a read on the phone reached the laptop on another node in %v", time.Since(start))
	sawRead(phone, 10)
	agree(10, 10)
	// bob's edit takes a seq (21) but is no unread message.
	if _, err := bobc.Send(ctx, &api.SendRequest{Room: room, Message: &api.Message{User: "bob", Kind: api.Kind_KIND_EDIT, TargetSeq: 20, Text: "b20!"}}); err != nil {
		t.Fatal(err)
	}
	laptop.wait("the edit", has(api.Kind_KIND_EDIT, func(m *api.Message) bool { return m.GetSeq() == 21 }))
	agree(10, 10)
	procs[0].kill()
	killed = true
	phone2 := personal(nodes[2], client.GRPC)
	if err := phone2.r.Send(&api.Message{Kind: api.Kind_KIND_READ, Room: room, Seq: 21, Epoch: epoch}); err != nil {
		t.Fatal(err)
	}
	sawRead(laptop, 21)
	sawRead(phone2, 21)
	agree(21, 0)
	// Back is not a move: the marker stays.
	r, err := grpcClient(t, nodes[1].GRPC).MarkRead(ctx, &api.MarkReadRequest{User: "ann", Room: room, Seq: 5, Epoch: epoch})
	if err != nil || r.GetSeq() != 21 || r.GetUnread() != 0 {
		t.Fatalf("marking back: %v, %v", r, err)
	}
	agree(21, 0)
	// A stale epoch is refused.
	if _, err := grpcClient(t, nodes[1].GRPC).MarkRead(ctx, &api.MarkReadRequest{User: "ann", Room: room, Seq: 5, Epoch: "stale"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a stale epoch: %v", err)
	}
	// Nobody else may mark ann's conversation (it is not theirs).
	if _, err := grpcClient(t, nodes[1].GRPC).MarkRead(ctx, &api.MarkReadRequest{User: "mallory", Room: room, Seq: 5, Epoch: epoch}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a stranger's marker: %v", err)
	}
}

// TestNonAuthorRefusedEverywhere: with JWT and in open mode, bob's edit or
// delete of alice's message is refused on gRPC Send, REST, a gRPC stream
// and a WebSocket, on two node processes; alice's own edit passes; and
// nothing bob tried took a seq.
func TestNonAuthorRefusedEverywhere(t *testing.T) {
	t.Parallel()
	bin := buildNode(t)
	for _, jwt := range []bool{false, true} {
		mode := map[bool]string{false: "open", true: "jwt"}[jwt]
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			rs := testutil.StartRedis(t)
			var extra []string
			if jwt {
				extra = []string{"-jwt-secret", accessSecret}
			}
			_, nodes := startProcs(t, bin, rs.Addr(), "na-"+mode+"-", 2, extra...)
			ctx := t.Context()
			room := newRoom()
			as := func(user string) context.Context {
				if !jwt {
					return ctx
				}
				tok, err := auth.Mint([]byte(accessSecret), user, nil, time.Hour, "", "")
				if err != nil {
					t.Fatal(err)
				}
				return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
			}
			name := func(user string) string {
				if jwt {
					return "" // the token says
				}
				return user
			}
			g := grpcClient(t, nodes[0].GRPC)
			orig, err := g.Send(as("alice"), &api.SendRequest{Room: room, Message: &api.Message{User: name("alice"), Text: "alice's words"}})
			if err != nil {
				t.Fatal(err)
			}
			edit := &api.Message{User: name("bob"), Kind: api.Kind_KIND_EDIT, TargetSeq: orig.GetSeq(), Text: "bob's words"}
			del := &api.Message{User: name("bob"), Kind: api.Kind_KIND_DELETE, TargetSeq: orig.GetSeq()}
			for _, m := range []*api.Message{edit, del} {
				if _, err := grpcClient(t, nodes[1].GRPC).Send(as("bob"), &api.SendRequest{Room: room, Message: m}); status.Code(err) != codes.PermissionDenied {
					t.Errorf("gRPC Send %s: %v, want PermissionDenied", m.GetKind(), err)
				}
				body := fmt.Sprintf(`{"user":%q,"kind":%q,"targetSeq":"%d","text":%q}`, m.GetUser(), m.GetKind(), m.GetTargetSeq(), m.GetText())
				req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+nodes[1].HTTP+"/v1/rooms/"+room+"/messages", bytes.NewReader([]byte(body)))
				if jwt {
					tok, _ := auth.Mint([]byte(accessSecret), "bob", nil, time.Hour, "", "")
					req.Header.Set("Authorization", "Bearer "+tok)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				rb, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusForbidden {
					t.Errorf("REST %s: HTTP %d %s, want 403", m.GetKind(), resp.StatusCode, rb)
				}
			}
			// The streams: gRPC on node 1, WebSocket on node 2.
			hdr := http.Header{}
			gctx := ctx
			if jwt {
				tok, _ := auth.Mint([]byte(accessSecret), "bob", nil, time.Hour, "", "")
				hdr.Set("Authorization", "Bearer "+tok)
				gctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
			}
			first := &api.Message{User: "bob", Room: room, Join: &api.Join{Events: true, Changes: true}}
			gs := openStream(t, gctx, client.GRPC, nodes[0].GRPC, first)
			c, _, err := websocket.Dial(ctx, "ws://"+nodes[1].HTTP+"/v1/chat/stream", &websocket.DialOptions{HTTPHeader: hdr})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.CloseNow() })
			ws := collect(t, &wsRaw{ctx: ctx, c: c}, first)
			for _, s := range []*stream{gs, ws} {
				s.wait("live", has(api.Kind_KIND_LIVE, func(*api.Message) bool { return true }))
				for i, m := range []*api.Message{edit, del} {
					id := fmt.Sprintf("bad%d", i)
					try := &api.Message{Kind: m.GetKind(), TargetSeq: m.GetTargetSeq(), Text: m.GetText(), Room: room, ClientId: id}
					if err := s.r.Send(try); err != nil {
						t.Fatal(err)
					}
					got := s.wait("the refusal", has(api.Kind_KIND_ERROR, func(f *api.Message) bool { return f.GetClientId() == id }))
					i := slices.IndexFunc(got, func(f *api.Message) bool { return f.GetClientId() == id && f.GetKind() == api.Kind_KIND_ERROR })
					if codes.Code(got[i].GetError().GetCode()) != codes.PermissionDenied {
						t.Errorf("stream %s: %v, want PermissionDenied", m.GetKind(), got[i])
					}
				}
			}
			page, err := g.History(as("alice"), &api.HistoryRequest{Room: room})
			if err != nil || page.GetHeadSeq() != 1 || page.GetMessages()[0].GetText() != "alice's words" || page.GetMessages()[0].GetEdited() {
				t.Fatalf("after bob's tries: %v, %v", page, err)
			}
			// alice's own edit passes.
			if _, err := g.Send(as("alice"), &api.SendRequest{Room: room, Message: &api.Message{User: name("alice"), Kind: api.Kind_KIND_EDIT, TargetSeq: 1, Text: "alice's better words"}}); err != nil {
				t.Fatalf("alice's edit: %v", err)
			}
			page, err = g.History(as("alice"), &api.HistoryRequest{Room: room})
			if err != nil || page.GetMessages()[0].GetText() != "alice's better words" || !page.GetMessages()[0].GetEdited() || page.GetMessages()[0].GetRev() != 2 {
				t.Fatalf("after alice's edit: %v, %v", page, err)
			}
		})
	}
}
