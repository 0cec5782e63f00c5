package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/client"
)

// prompt waits for the input line to be the live prompt want ("alice@dev>").
func (p *pane) prompt(want string) {
	p.t.Helper()
	p.wait("the prompt "+want, func(string) bool { return p.lastLine() == want })
}

// after is what the screen shows after its last line containing mark.
func after(screen, mark string) string {
	if i := strings.LastIndex(screen, mark); i >= 0 {
		return screen[i+len(mark):]
	}
	return ""
}

// nextIn returns the next chat message c receives in room.
func nextIn(t *testing.T, c *client.Client, room string) *api.Message {
	t.Helper()
	for {
		if m := nextText(t, c); m.GetRoom() == room {
			return m
		}
	}
}

// TestTTYJoinAndLeave: /join subscribes the same stream to a second room
// and makes it current (the prompt names it, typed lines go there), the
// first room's messages are then shown behind [#room]; /leave ends the
// second room and goes back to the first; the first room, bad names and
// rooms one is not in are refused in words.
func TestTTYJoinAndLeave(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t)
	bob := observer(t, a.GRPC, "bob", "dev", "")
	carol := observer(t, a.GRPC, "carol", "lobby", "")
	ctx := context.Background()
	p := startPane(t, nil, "-addr", a.GRPC, "-user", "alice", "-room", "lobby")
	p.waitText("* live in #lobby on " + a.GRPC)
	p.prompt("alice@lobby>")

	p.enter("/join dev")
	p.waitText("* joining #dev (now the current room")
	p.waitText("* live in #dev")
	p.prompt("alice@dev>")
	p.enter("hello dev")
	if m := nextIn(t, bob, "dev"); m.GetUser() != "alice" || m.GetText() != "hello dev" {
		t.Fatalf("bob got %q from %s in dev, want alice's line", m.GetText(), m.GetUser())
	}
	p.wait("alice's own line, in the current room", func(s string) bool { return msgLine("alice", "hello dev").MatchString(s) })

	if _, err := bob.Send(ctx, "hi alice"); err != nil {
		t.Fatal(err)
	}
	p.wait("bob's line in the current room, without a prefix", func(s string) bool { return msgLine("bob", "hi alice").MatchString(s) })
	if _, err := carol.Send(ctx, "meanwhile in the lobby"); err != nil {
		t.Fatal(err)
	}
	p.wait("carol's line behind [#lobby]", func(s string) bool {
		return regexp.MustCompile(`(?m)^\[#lobby\] \d\d:\d\d:\d\d carol: meanwhile in the lobby$`).MatchString(s)
	})

	p.enter("/leave")
	p.waitText("* left #dev; now in #lobby")
	p.prompt("alice@lobby>")
	// alice's next line is acknowledged after the node took the /leave
	// (one stream, in order).
	p.enter("back in the lobby")
	if m := nextIn(t, carol, "lobby"); m.GetUser() != "alice" || m.GetText() != "back in the lobby" {
		t.Fatalf("carol got %q from %s, want alice's line in the lobby", m.GetText(), m.GetUser())
	}
	p.wait("alice's line in the lobby", func(s string) bool { return msgLine("alice", "back in the lobby").MatchString(s) })
	// dev is no longer on the stream: bob's next line never shows, the
	// lobby's after it does.
	if _, err := bob.Send(ctx, "after you left"); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Send(ctx, "the lobby again"); err != nil {
		t.Fatal(err)
	}
	s := p.wait("carol's next line", func(s string) bool { return msgLine("carol", "the lobby again").MatchString(s) })
	if strings.Contains(s, "after you left") {
		t.Fatalf("a line of dev shown after /leave:\n%s", s)
	}

	p.enter("/leave")
	p.waitText("! #lobby is the room this client joined with (-room): it stays until /quit")
	p.enter("/leave dev")
	p.waitText("! not in #dev")
	p.enter("/join no such room!")
	p.waitText(`! /join: "no such room!" is not a room name`)
	p.enter("/join")
	p.waitText("! /join needs a room")
	p.prompt("alice@lobby>")
	// /join of a room one is in switches to it.
	p.enter("/join dev")
	p.waitText("* live in #dev")
	p.enter("/join lobby")
	p.waitText("* now in #lobby")
	p.prompt("alice@lobby>")
	// A refused room leaves alice where she was (the lobby, not dev, the
	// room joined last).
	other := access.DirectRoom("bob", "carol")
	p.enter("/join " + other)
	p.waitText("! cannot join " + other + `: not allowed: room "` + other + `" is a direct conversation of two other users; back in #lobby`)
	p.prompt("alice@lobby>")
	p.enter("/quit")
	if st := p.exitStatus(); st != 0 {
		t.Fatalf("/quit exited %d", st)
	}
}

// TestTTYDirectMessages, on a JWT node: alice /dm bob; bob's personal
// channel shows the invitation, he answers with /dm alice and sees her
// message in its history; messages go both ways, shown as the peer's name
// (never the dm. id), behind [@bob] when another room is current; carol
// cannot join it (refused in words, the stream goes on); /rooms lists the
// conversation with its peer.
func TestTTYDirectMessages(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t, "-jwt-secret", ttySecret)
	start := func(user string) *pane {
		tok, err := auth.Mint([]byte(ttySecret), user, nil, time.Hour, "", "")
		if err != nil {
			t.Fatal(err)
		}
		p := startPane(t, nil, "-addr", a.GRPC, "-token", tok)
		p.waitText("* live in #general")
		p.prompt(user + "@general>")
		return p
	}
	alice, bob, carol := start("alice"), start("bob"), start("carol")
	dm := access.DirectRoom("alice", "bob")

	alice.enter("/dm bob")
	alice.waitText("* started a direct conversation with bob (they are told)")
	alice.waitText("* live in @bob")
	alice.prompt("alice→@bob>")
	bob.waitText("* alice started a direct conversation — /dm alice")
	alice.enter("hi bob, just us")
	alice.wait("alice's own line", func(s string) bool { return msgLine("alice", "hi bob, just us").MatchString(s) })

	bob.enter("/dm alice")
	bob.waitText("* live in @alice")
	bob.prompt("bob→@alice>")
	bob.wait("alice's line in the history, in the current room", func(s string) bool { return msgLine("alice", "hi bob, just us").MatchString(s) })
	bob.enter("hi alice")
	alice.wait("bob's answer in the current room", func(s string) bool { return msgLine("bob", "hi alice").MatchString(s) })

	// With another room current, the conversation's lines carry the peer.
	alice.enter("/join general")
	alice.waitText("* now in #general")
	alice.prompt("alice@general>")
	bob.enter("are you there?")
	alice.wait("bob's line behind [@bob]", func(s string) bool {
		return regexp.MustCompile(`(?m)^\[@bob\] \d\d:\d\d:\d\d bob: are you there\?$`).MatchString(s)
	})
	bob.enter("/who")
	bob.waitText("* a direct conversation: you and alice")

	// carol knows the id, and is refused.
	carol.enter("/join " + dm)
	carol.waitText("! cannot join " + dm + `: not allowed: room "` + dm + `" is a direct conversation of two other users; back in #general`)
	carol.prompt("carol@general>")
	carol.enter("/dm alice") // her own conversation with alice works
	carol.waitText("* live in @alice")
	if s := carol.screen(); strings.Contains(s, "just us") || strings.Contains(s, "are you there") {
		t.Fatalf("carol sees alice and bob's conversation:\n%s", s)
	}

	alice.enter("/rooms")
	s := alice.waitText("* /join ROOM or /dm USER goes to one")
	list := after(s, "/rooms")
	if !regexp.MustCompile(`(?m)^\*   @bob +direct +last #3 +receiving$`).MatchString(list) {
		t.Fatalf("/rooms does not list the conversation with bob (direct, last #3, receiving):\n%s", list)
	}
	if !regexp.MustCompile(`(?m)^\*   @carol +direct +no messages yet$`).MatchString(list) {
		t.Fatalf("/rooms does not list carol's conversation (direct, not received here):\n%s", list)
	}
	if !regexp.MustCompile(`(?m)^\*   #general .*receiving, current$`).MatchString(list) {
		t.Fatalf("/rooms does not mark #general as current:\n%s", list)
	}
	for _, p := range []*pane{alice, bob} {
		if s := p.screen(); strings.Contains(s, "dm.") {
			t.Fatalf("a screen shows the conversation's id, not the peer:\n%s", s)
		}
	}
}

// TestTTYPrivateRoom, on a JWT node: bob makes a private room and adds
// alice; her personal channel shows the invitation, /join takes her in,
// and when bob removes her the node ends her subscription: she is told
// in words and is back in her first room.
func TestTTYPrivateRoom(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t, "-jwt-secret", ttySecret)
	mint := func(user string) string {
		tok, err := auth.Mint([]byte(ttySecret), user, nil, time.Hour, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	p := startPane(t, nil, "-addr", a.GRPC, "-token", mint("alice"))
	p.waitText("* live in #general")
	p.prompt("alice@general>")

	cc, err := grpc.NewClient(a.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+mint("bob"))
	chat := api.NewChatClient(cc)
	if _, err := chat.CreateRoom(ctx, &api.CreateRoomRequest{Room: "team"}); err != nil {
		t.Fatal(err)
	}
	p.enter("/join team")
	p.waitText(`! cannot join #team: not allowed: room "team" is private: only its members may use it; back in #general`)
	if _, err := chat.AddMember(ctx, &api.MemberRequest{Room: "team", Member: "alice"}); err != nil {
		t.Fatal(err)
	}
	p.waitText("* bob invited you to #team — /join team")
	p.enter("/join team")
	p.waitText("* live in #team")
	p.prompt("alice@team>")
	p.enter("hello team")
	p.wait("alice's line in team", func(s string) bool { return msgLine("alice", "hello team").MatchString(s) })
	if _, err := chat.RemoveMember(ctx, &api.MemberRequest{Room: "team", Member: "alice"}); err != nil {
		t.Fatal(err)
	}
	p.waitText("! no longer in #team: removed from the room by its owner; now in #general")
	p.prompt("alice@general>")
}
