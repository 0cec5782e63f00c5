package rpc_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/auth"
)

// wantCode fails unless err has code c and its message contains want.
func wantCode(t *testing.T, what string, err error, c codes.Code, want string) {
	t.Helper()
	if status.Code(err) != c || !strings.Contains(status.Convert(err).Message(), want) {
		t.Fatalf("%s: got %v; want %v containing %q", what, err, c, want)
	}
}

// TestAccessRPCs runs the access calls in open mode (the request names
// the caller) and with JWT (the token does; the request may name the
// same user or none, never another).
func TestAccessRPCs(t *testing.T) {
	t.Parallel()
	secret := []byte(strings.Repeat("k", 32))
	for _, jwt := range []bool{false, true} {
		name := map[bool]string{false: "open", true: "jwt"}[jwt]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var opts []grpc.ServerOption
			if jwt {
				v, err := auth.NewVerifier(auth.Config{HMACSecret: secret})
				if err != nil {
					t.Fatal(err)
				}
				opts = append(opts, grpc.ChainUnaryInterceptor(v.UnaryInterceptor()), grpc.ChainStreamInterceptor(v.StreamInterceptor()))
			}
			cc, _ := serve(t, nil, opts...)
			c := api.NewChatClient(cc)
			// as returns the context and the request's user name for user:
			// a token and no name with JWT, the name in open mode.
			as := func(user string, rooms ...string) (context.Context, string) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t.Cleanup(cancel)
				if !jwt {
					return ctx, user
				}
				tok, err := auth.Mint(secret, user, rooms, time.Hour, "", "")
				if err != nil {
					t.Fatal(err)
				}
				return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), ""
			}
			actx, alice := as("alice")
			bctx, bob := as("bob")
			mctx, mallory := as("mallory")

			d, err := c.Direct(actx, &api.DirectRequest{User: alice, Peer: "bob"})
			if err != nil || !d.GetCreated() || d.GetRoom() != access.DirectRoom("alice", "bob") {
				t.Fatalf("Direct = %v, %v", d, err)
			}
			dm := d.GetRoom()
			send := func(ctx context.Context, user, room, text string) error {
				_, err := c.Send(ctx, &api.SendRequest{Room: room, Message: &api.Message{User: user, Text: text}})
				return err
			}
			if err := send(bctx, bob, dm, "hi alice"); err != nil {
				t.Fatal(err)
			}
			wantCode(t, "mallory sends to the dm", send(mctx, mallory, dm, "psst"), codes.PermissionDenied, "direct conversation of two other users")
			_, err = c.History(mctx, &api.HistoryRequest{Room: dm, User: mallory})
			wantCode(t, "mallory reads the dm", err, codes.PermissionDenied, "direct conversation")
			_, err = c.Presence(mctx, &api.PresenceRequest{Room: dm})
			wantCode(t, "mallory lists the dm's presence", err, codes.PermissionDenied, "")
			h, err := c.History(actx, &api.HistoryRequest{Room: dm, User: alice})
			if err != nil || len(h.GetMessages()) != 1 || h.GetMessages()[0].GetText() != "hi alice" {
				t.Fatalf("alice reads the dm: %v, %v", h, err)
			}
			if jwt {
				// The token is alice's: naming bob is impersonation, naming
				// alice is fine.
				_, err = c.History(actx, &api.HistoryRequest{Room: dm, User: "bob"})
				wantCode(t, "alice's token names bob", err, codes.PermissionDenied, "does not match the authenticated user")
				_, err = c.Direct(mctx, &api.DirectRequest{User: "alice", Peer: "bob"})
				wantCode(t, "mallory's token starts alice's dm", err, codes.PermissionDenied, "does not match")
				if _, err := c.History(actx, &api.HistoryRequest{Room: dm, User: "alice"}); err != nil {
					t.Fatalf("alice's token naming alice: %v", err)
				}
			} else {
				// Anonymous open-mode reads see public rooms only.
				_, err = c.History(actx, &api.HistoryRequest{Room: dm})
				wantCode(t, "anonymous read of the dm", err, codes.PermissionDenied, "name the user")
			}

			// Private rooms.
			info, err := c.CreateRoom(actx, &api.CreateRoomRequest{User: alice, Room: "team"})
			if err != nil || info.GetOwner() != "alice" {
				t.Fatalf("CreateRoom = %v, %v", info, err)
			}
			_, err = c.CreateRoom(bctx, &api.CreateRoomRequest{User: bob, Room: "team"})
			wantCode(t, "bob creates team again", err, codes.AlreadyExists, "already exists")
			_, err = c.AddMember(bctx, &api.MemberRequest{User: bob, Room: "team", Member: "bob"})
			wantCode(t, "bob adds himself", err, codes.PermissionDenied, "only the owner")
			_, err = c.AddMember(actx, &api.MemberRequest{User: alice, Room: "general", Member: "bob"})
			wantCode(t, "member of a public room", err, codes.InvalidArgument, "not a private room")
			wantCode(t, "bob posts before he is a member", send(bctx, bob, "team", "x"), codes.PermissionDenied, "private")
			info, err = c.AddMember(actx, &api.MemberRequest{User: alice, Room: "team", Member: "bob"})
			if err != nil || !slices.Equal(info.GetMembers(), []string{"alice", "bob"}) {
				t.Fatalf("AddMember = %v, %v", info, err)
			}
			if err := send(bctx, bob, "team", "thanks"); err != nil {
				t.Fatalf("bob posts as a member: %v", err)
			}
			info, err = c.RemoveMember(actx, &api.MemberRequest{User: alice, Room: "team", Member: "bob"})
			if err != nil || !slices.Equal(info.GetMembers(), []string{"alice"}) {
				t.Fatalf("RemoveMember = %v, %v", info, err)
			}
			_, err = c.History(bctx, &api.HistoryRequest{Room: "team", User: bob})
			wantCode(t, "bob reads after removal", err, codes.PermissionDenied, "private")

			// Conversations: the dm, with its position and peer.
			cv, err := c.Conversations(actx, &api.ConversationsRequest{User: alice})
			if err != nil {
				t.Fatal(err)
			}
			var rooms []string
			for _, x := range cv.GetConversations() {
				rooms = append(rooms, x.GetRoom())
			}
			if !slices.Contains(rooms, dm) || !slices.Contains(rooms, "team") {
				t.Fatalf("alice's conversations %v; want the dm and team", rooms)
			}
			for _, x := range cv.GetConversations() {
				if x.GetRoom() == dm && (x.GetPeer() != "bob" || x.GetLastSeq() != 1 || x.GetKind() != "direct" || x.GetEpoch() == "") {
					t.Fatalf("dm entry %v; want peer bob at seq 1", x)
				}
			}

			if jwt {
				// A token bounded to rooms bounds these calls too.
				nctx, _ := as("alice", "general")
				_, err = c.CreateRoom(nctx, &api.CreateRoomRequest{Room: "team2"})
				wantCode(t, "narrow token creates a room", err, codes.PermissionDenied, "may not use room")
				_, err = c.Direct(nctx, &api.DirectRequest{Peer: "carol"})
				wantCode(t, "narrow token starts a dm", err, codes.PermissionDenied, "may not use room")
				cv, err := c.Conversations(nctx, &api.ConversationsRequest{})
				if err != nil || len(cv.GetConversations()) != 0 {
					t.Fatalf("narrow token lists %v, %v; want nothing outside general", cv, err)
				}
			}
		})
	}
}
