package client_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
)

// dialLive dials cfg and waits until it is live.
func dialLive(ctx context.Context, t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	c, err := client.Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.WaitLive(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEditDeleteReact, on both transports: the author's edit, a
// reaction toggled on and off and the author's delete reach a second
// client that asked for changes, in order, naming their message; a
// non-author is refused (PermissionDenied) and a deleted message takes
// nothing more (NotFound); a stream without changes never sees the
// events; a page shows the message as it stands.
func TestEditDeleteReact(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t)
	for _, tc := range []struct {
		transport client.Transport
		addr      string
	}{{client.GRPC, a.GRPC}, {client.WebSocket, a.HTTP}} {
		t.Run(string(tc.transport), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			room := "state-" + string(tc.transport)
			cfg := func(user string, changes bool) client.Config {
				return client.Config{Addrs: []string{tc.addr}, Transport: tc.transport, User: user, Room: room, NoHistory: true, Changes: changes}
			}
			alice := dialLive(ctx, t, cfg("alice", true))
			bob := dialLive(ctx, t, cfg("bob", true))
			carol := dialLive(ctx, t, cfg("carol", false))

			ack, err := alice.Send(ctx, "helo")
			if err != nil {
				t.Fatal(err)
			}
			seq := ack.GetSeq()
			waitMessage(t, bob, room, "helo", 10*time.Second)

			edit, err := alice.Edit(ctx, room, seq, "hello")
			if err != nil {
				t.Fatal(err)
			}
			if edit.GetTargetSeq() != seq || edit.GetSeq() <= seq {
				t.Fatalf("edit ack %v, want target %d and a seq of its own", edit, seq)
			}
			e := nextKind(t, bob, api.Kind_KIND_EDIT, room, 10*time.Second)
			if e.GetTargetSeq() != seq || e.GetText() != "hello" || e.GetUser() != "alice" || e.GetSeq() != edit.GetSeq() {
				t.Fatalf("bob saw edit %v, want alice's #%d -> hello at %d", e, seq, edit.GetSeq())
			}

			if _, err := bob.Edit(ctx, room, seq, "mine now"); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("bob's edit of alice's message: %v, want PermissionDenied", err)
			}
			if _, err := bob.Delete(ctx, room, seq); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("bob's delete of alice's message: %v, want PermissionDenied", err)
			}

			for _, want := range []bool{true, false, true} {
				added, err := bob.React(ctx, room, seq, "👍")
				if err != nil || added != want {
					t.Fatalf("bob's reaction: added %v, %v; want %v", added, err, want)
				}
				r := nextKind(t, alice, api.Kind_KIND_REACTION, room, 10*time.Second)
				if r.GetTargetSeq() != seq || r.GetText() != "👍" || r.GetUser() != "bob" || r.GetReacted() != want {
					t.Fatalf("alice saw reaction %v, want bob's 👍 on #%d, reacted %v", r, seq, want)
				}
			}

			del, err := alice.Delete(ctx, room, seq)
			if err != nil {
				t.Fatal(err)
			}
			if d := nextKind(t, bob, api.Kind_KIND_DELETE, room, 10*time.Second); d.GetTargetSeq() != seq || d.GetUser() != "alice" {
				t.Fatalf("bob saw delete %v, want alice's #%d", d, seq)
			}
			if _, err := alice.Edit(ctx, room, seq, "back"); status.Code(err) != codes.NotFound {
				t.Fatalf("edit of a deleted message: %v, want NotFound", err)
			}

			page, err := bob.Before(ctx, room, 0, "", 10)
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(page.GetMessages(), func(m *api.Message) bool { return m.GetSeq() == seq })
			if i < 0 {
				t.Fatalf("page %v lacks #%d", page, seq)
			}
			if m := page.GetMessages()[i]; !m.GetDeleted() || m.GetText() != "" || m.GetRev() != del.GetSeq() {
				t.Fatalf("page shows #%d as %v, want a tombstone at rev %d", seq, m, del.GetSeq())
			}

			// carol asked for messages only: the next thing she sees in
			// the room after alice's message is the one sent now.
			if _, err := alice.Send(ctx, "after"); err != nil {
				t.Fatal(err)
			}
			timeout := time.After(10 * time.Second)
			for seen := 0; ; {
				select {
				case m := <-carol.Messages():
					if client.IsStateEvent(m) {
						t.Fatalf("carol, without changes, got %v", m)
					}
					if m.GetKind() == api.Kind_KIND_MESSAGE {
						if seen++; m.GetText() == "after" {
							if seen != 2 {
								t.Fatalf("carol saw %d messages, want helo and after", seen)
							}
							return
						}
					}
				case <-timeout:
					t.Fatal("carol never saw after")
				}
			}
		})
	}
}

// TestPageBackThroughTheLog: 300 messages in a log of 1000 (more than the
// node's replay history) come back page by page, backwards from the
// newest, each once and in order, until the page at the log's start.
func TestPageBackThroughTheLog(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t, "-log-size", "1000")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 300
	sender := dialLive(ctx, t, client.Config{Addrs: []string{a.GRPC}, User: "alice", Room: "long", NoHistory: true})
	for i := range n {
		if _, err := sender.Send(ctx, fmt.Sprintf("m%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		transport client.Transport
		addr      string
	}{{client.GRPC, a.GRPC}, {client.WebSocket, a.HTTP}} {
		t.Run(string(tc.transport), func(t *testing.T) {
			reader := dialLive(ctx, t, client.Config{Addrs: []string{tc.addr}, Transport: tc.transport, User: "bob", Room: "long", NoHistory: true})
			var (
				got    []string
				before uint64
				epoch  string
				pages  int
			)
			for {
				p, err := reader.Before(ctx, "long", before, epoch, 64)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				if pages > n {
					t.Fatal("paging does not end")
				}
				texts := make([]string, 0, len(p.GetMessages()))
				for i, m := range p.GetMessages() {
					if i > 0 && m.GetSeq() <= p.GetMessages()[i-1].GetSeq() {
						t.Fatalf("page not oldest first: %v", p.GetMessages())
					}
					texts = append(texts, m.GetText())
				}
				got = append(texts, got...)
				if p.GetAtStart() {
					break
				}
				if p.GetFirstSeq() == 0 || (before != 0 && p.GetFirstSeq() >= before) {
					t.Fatalf("page %d does not move back: first_seq %d, before %d", pages, p.GetFirstSeq(), before)
				}
				before, epoch = p.GetFirstSeq(), p.GetEpoch()
			}
			if len(got) != n {
				t.Fatalf("paged back %d messages in %d pages, want %d", len(got), pages, n)
			}
			for i, s := range got {
				if want := fmt.Sprintf("m%03d", i); s != want {
					t.Fatalf("message %d is %q, want %q", i, s, want)
				}
			}
			// Pages never come through Messages.
			select {
			case m := <-reader.Messages():
				if m.GetKind() == api.Kind_KIND_PAGE {
					t.Fatalf("a page came through Messages: %v", m)
				}
			default:
			}
		})
	}
}

// TestMarkRead: a user's marker moved on one device is pushed to their
// other device on the personal channel, shows in Conversations with what
// is unread after it, and never moves back.
func TestMarkRead(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	phone := dialLive(ctx, t, client.Config{Addrs: []string{a.GRPC}, User: "dora", Room: "reads", NoHistory: true, Personal: true})
	laptop := dialLive(ctx, t, client.Config{Addrs: []string{a.HTTP}, Transport: client.WebSocket, User: "dora", Room: "reads", NoHistory: true, Personal: true})
	var acks []*api.Message
	for i := range 3 {
		ack, err := phone.Send(ctx, fmt.Sprintf("r%d", i))
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, ack)
	}
	mid := acks[1]
	r, err := phone.MarkRead(ctx, "reads", mid.GetEpoch(), mid.GetSeq())
	if err != nil {
		t.Fatal(err)
	}
	if r.GetSeq() != mid.GetSeq() || r.GetUnread() != 1 {
		t.Fatalf("MarkRead = %v, want seq %d, 1 unread", r, mid.GetSeq())
	}
	m := nextKind(t, laptop, api.Kind_KIND_READ, "", 10*time.Second)
	if m.GetRoom() != "reads" || m.GetSeq() != mid.GetSeq() || m.GetEpoch() != mid.GetEpoch() || m.GetUser() != "dora" {
		t.Fatalf("the laptop saw %v, want reads read to %d", m, mid.GetSeq())
	}
	convs, err := laptop.Conversations(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(convs, func(c *api.Conversation) bool { return c.GetRoom() == "reads" })
	if i < 0 || convs[i].GetReadSeq() != mid.GetSeq() || convs[i].GetUnread() != 1 {
		t.Fatalf("conversations %v, want reads read to %d with 1 unread", convs, mid.GetSeq())
	}
	// From the laptop (REST) and backwards: nothing moves.
	if r, err := laptop.MarkRead(ctx, "reads", mid.GetEpoch(), acks[0].GetSeq()); err != nil || r.GetSeq() != mid.GetSeq() {
		t.Fatalf("MarkRead back = %v, %v; want it to stay at %d", r, err, mid.GetSeq())
	}
	if _, err := laptop.MarkRead(ctx, "reads", "not-the-epoch", 1); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("MarkRead of another epoch: %v, want InvalidArgument", err)
	}
}
