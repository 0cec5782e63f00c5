package integration_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
)

// TestMembershipAcrossNodes: bob and carol each have two devices, on
// different node processes, with their personal channels. alice (on a
// third node) creates a private room and adds bob: both of bob's devices
// are invited (KIND_INVITE naming the room) and subscribe; alice removes
// him: both devices' subscriptions end (KIND_UNSUBSCRIBED) on their nodes,
// and subscribing again is refused. alice starts a direct conversation
// with carol: both of carol's devices are invited to it.
func TestMembershipAcrossNodes(t *testing.T) {
	t.Parallel()
	bin := buildNode(t)
	rs := testutil.StartRedis(t)
	_, nodes := startProcs(t, bin, rs.Addr(), "mb", 3)
	ctx := t.Context()
	cc, err := grpc.NewClient(nodes[0].GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	admin := api.NewChatClient(cc)
	device := func(user string, node int, tr client.Transport) *chattest.Member {
		return chattest.Join(t, client.Config{Addrs: chattest.Addrs(tr, nodes[node]), Transport: tr, User: user, Personal: true})
	}
	bob := []*chattest.Member{device("bob", 1, client.GRPC), device("bob", 2, client.WebSocket)}
	carol := []*chattest.Member{device("carol", 1, client.WebSocket), device("carol", 2, client.GRPC)}
	chattest.WaitLive(t, liveTimeout, append(bob, carol...)...)

	room := newRoom()
	if _, err := admin.CreateRoom(ctx, &api.CreateRoomRequest{User: "alice", Room: room}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddMember(ctx, &api.MemberRequest{User: "alice", Room: room, Member: "bob"}); err != nil {
		t.Fatal(err)
	}
	for _, d := range bob {
		waitKind(t, d, api.Kind_KIND_INVITE, room)
		if err := d.Subscribe(room); err != nil {
			t.Fatal(err)
		}
		waitKind(t, d, api.Kind_KIND_LIVE, room)
	}
	removed := time.Now()
	if _, err := admin.RemoveMember(ctx, &api.MemberRequest{User: "alice", Room: room, Member: "bob"}); err != nil {
		t.Fatal(err)
	}
	for _, d := range bob {
		waitKind(t, d, api.Kind_KIND_UNSUBSCRIBED, room)
	}
	t.Logf("both of bob's devices unsubscribed %v after the removal", time.Since(removed).Round(time.Millisecond))
	if err := bob[0].Unsubscribe(room); err != nil { // the client forgets it too
		t.Fatal(err)
	}
	if err := bob[0].Subscribe(room); err != nil {
		t.Fatal(err)
	}
	waitKind(t, bob[0], api.Kind_KIND_ERROR, room)

	dm, err := admin.Direct(ctx, &api.DirectRequest{User: "alice", Peer: "carol"})
	if err != nil || !dm.GetCreated() {
		t.Fatalf("Direct = %v, %v", dm, err)
	}
	for _, d := range carol {
		if m := waitKind(t, d, api.Kind_KIND_INVITE, dm.GetRoom()); m.GetUser() != "alice" {
			t.Errorf("%s's invitation names %q, want alice", d.User, m.GetUser())
		}
	}
	convs, err := admin.Conversations(context.Background(), &api.ConversationsRequest{User: "carol"})
	if err != nil || len(convs.GetConversations()) == 0 || convs.GetConversations()[0].GetRoom() != dm.GetRoom() {
		t.Fatalf("carol's conversations = %v, %v; want the direct one first", convs, err)
	}
}

// waitKind waits until m received a frame of kind about room.
func waitKind(t *testing.T, m *chattest.Member, kind api.Kind, room string) *api.Message {
	t.Helper()
	var found *api.Message
	chattest.Eventually(t, 10*time.Second, func() error {
		for _, got := range m.All() {
			if got.GetKind() == kind && got.GetRoom() == room {
				found = got
				return nil
			}
		}
		return fmt.Errorf("%s has no %s for %s", m.User, kind, room)
	})
	return found
}
