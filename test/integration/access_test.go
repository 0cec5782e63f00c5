package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/auth"
)

// accessSecret signs the JWT mode's tokens.
const accessSecret = "integration-access-secret-0123456789"

// TestDirectMessagePrivacy: two node processes on one redis-server, in
// open mode (identity claimed by the request) and with JWT (identity from
// signed tokens). alice starts a direct conversation with bob over REST on
// one node; a third user is refused on gRPC History and Send and on REST
// History and Send, on both nodes, and so is a token naming another user;
// the two members are served. alice creates a private room over REST and
// adds bob over gRPC on the other node; a non-owner is refused, a second
// creation conflicts. alice's conversations over REST list the direct
// conversation with its last seq and bob as the peer.
func TestDirectMessagePrivacy(t *testing.T) {
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
			_, nodes := startProcs(t, bin, rs.Addr(), "acc-"+mode+"-", 2, extra...)
			p := &privacyClient{t: t, jwt: jwt, grpc: make(map[string]api.ChatClient)}
			for _, n := range nodes {
				cc, err := grpc.NewClient(n.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cc.Close() })
				p.grpc[n.GRPC] = api.NewChatClient(cc)
			}
			a, b := nodes[0], nodes[1]

			// alice starts the conversation over REST on node a.
			var d api.DirectResponse
			if code := p.rest(a.HTTP, "alice", http.MethodPost, "/v1/direct", map[string]string{"peer": "bob"}, &d); code != http.StatusOK || !d.GetCreated() {
				t.Fatalf("POST /v1/direct: %d %v", code, &d)
			}
			dm := d.GetRoom()
			if dm != access.DirectRoom("alice", "bob") {
				t.Fatalf("direct room %q; want %q", dm, access.DirectRoom("alice", "bob"))
			}
			// One message from each member, one per edge and node.
			if _, err := p.send(b.GRPC, "bob", dm, "hi alice"); err != nil {
				t.Fatalf("bob sends over gRPC: %v", err)
			}
			if code := p.rest(a.HTTP, "alice", http.MethodPost, "/v1/rooms/"+dm+"/messages", map[string]string{"text": "hi bob"}, nil); code != http.StatusOK {
				t.Fatalf("alice sends over REST: %d", code)
			}

			// mallory, everywhere.
			for _, n := range nodes {
				if _, err := p.send(n.GRPC, "mallory", dm, "psst"); status.Code(err) != codes.PermissionDenied {
					t.Errorf("%s: mallory's gRPC Send: %v; want PermissionDenied", n.GRPC, err)
				}
				if _, err := p.history(n.GRPC, "mallory", "mallory", dm); status.Code(err) != codes.PermissionDenied {
					t.Errorf("%s: mallory's gRPC History: %v; want PermissionDenied", n.GRPC, err)
				}
				if code := p.rest(n.HTTP, "mallory", http.MethodGet, "/v1/rooms/"+dm+"/messages?user=mallory", nil, nil); code != http.StatusForbidden {
					t.Errorf("%s: mallory's REST History: %d; want 403", n.HTTP, code)
				}
				if code := p.rest(n.HTTP, "mallory", http.MethodPost, "/v1/rooms/"+dm+"/messages", map[string]string{"text": "psst"}, nil); code != http.StatusForbidden {
					t.Errorf("%s: mallory's REST Send: %d; want 403", n.HTTP, code)
				}
				if jwt {
					// A token of mallory naming alice is not alice.
					if code := p.rest(n.HTTP, "mallory", http.MethodGet, "/v1/rooms/"+dm+"/messages?user=alice", nil, nil); code != http.StatusForbidden {
						t.Errorf("%s: mallory's token naming alice: %d; want 403", n.HTTP, code)
					}
					if _, err := p.history(n.GRPC, "mallory", "alice", dm); status.Code(err) != codes.PermissionDenied {
						t.Errorf("%s: mallory's token naming alice on gRPC: %v; want PermissionDenied", n.GRPC, err)
					}
				} else if code := p.rest(n.HTTP, "", http.MethodGet, "/v1/rooms/"+dm+"/messages", nil, nil); code != http.StatusForbidden {
					t.Errorf("%s: anonymous REST History: %d; want 403", n.HTTP, code)
				}
			}
			// The members, everywhere: both messages, in order.
			for _, n := range nodes {
				for _, u := range []string{"alice", "bob"} {
					h, err := p.history(n.GRPC, u, u, dm)
					if err != nil || !slices.Equal(texts(h.GetMessages()), []string{"hi alice", "hi bob"}) {
						t.Errorf("%s: %s's gRPC History: %v, %v", n.GRPC, u, h, err)
					}
					var rh api.HistoryResponse
					if code := p.rest(n.HTTP, u, http.MethodGet, "/v1/rooms/"+dm+"/messages?user="+url.QueryEscape(u), nil, &rh); code != http.StatusOK || len(rh.GetMessages()) != 2 {
						t.Errorf("%s: %s's REST History: %d, %v", n.HTTP, u, code, &rh)
					}
				}
			}

			// A private room: created over REST on a, bob added over gRPC
			// on b.
			var info api.RoomInfo
			if code := p.rest(a.HTTP, "alice", http.MethodPost, "/v1/rooms", map[string]string{"room": "team"}, &info); code != http.StatusOK || info.GetOwner() != "alice" {
				t.Fatalf("POST /v1/rooms: %d %v", code, &info)
			}
			if code := p.rest(b.HTTP, "bob", http.MethodPost, "/v1/rooms", map[string]string{"room": "team"}, nil); code != http.StatusConflict {
				t.Errorf("bob creates team again: %d; want 409", code)
			}
			if code := p.rest(b.HTTP, "bob", http.MethodPost, "/v1/rooms/team/members", map[string]string{"member": "bob"}, nil); code != http.StatusForbidden {
				t.Errorf("bob adds himself over REST: %d; want 403", code)
			}
			if _, err := p.send(b.GRPC, "bob", "team", "let me in"); status.Code(err) != codes.PermissionDenied {
				t.Errorf("bob posts before he is a member: %v; want PermissionDenied", err)
			}
			got, err := p.grpc[b.GRPC].AddMember(p.ctx("alice"), &api.MemberRequest{User: p.name("alice"), Room: "team", Member: "bob"})
			if err != nil || !slices.Equal(got.GetMembers(), []string{"alice", "bob"}) {
				t.Fatalf("alice adds bob over gRPC: %v, %v", got, err)
			}
			if _, err := p.grpc[a.GRPC].AddMember(p.ctx("bob"), &api.MemberRequest{User: p.name("bob"), Room: "team", Member: "mallory"}); status.Code(err) != codes.PermissionDenied {
				t.Errorf("bob (a member, not the owner) adds mallory: %v; want PermissionDenied", err)
			}
			if _, err := p.send(a.GRPC, "bob", "team", "thanks"); err != nil {
				t.Errorf("bob posts as a member: %v", err)
			}
			if _, err := p.history(a.GRPC, "mallory", "mallory", "team"); status.Code(err) != codes.PermissionDenied {
				t.Errorf("mallory reads team: %v; want PermissionDenied", err)
			}

			// alice's sidebar over REST, from the other node.
			var cv api.ConversationsResponse
			if code := p.rest(b.HTTP, "alice", http.MethodGet, "/v1/users/alice/conversations", nil, &cv); code != http.StatusOK {
				t.Fatalf("GET conversations: %d", code)
			}
			var found *api.Conversation
			for _, c := range cv.GetConversations() {
				if c.GetRoom() == dm {
					found = c
				}
			}
			if found == nil || found.GetLastSeq() != 2 || found.GetPeer() != "bob" || found.GetKind() != "direct" || found.GetEpoch() == "" {
				t.Fatalf("alice's conversations %v; want the dm with bob at seq 2", &cv)
			}
			if jwt {
				if code := p.rest(b.HTTP, "mallory", http.MethodGet, "/v1/users/alice/conversations", nil, nil); code != http.StatusForbidden {
					t.Errorf("mallory lists alice's conversations: %d; want 403", code)
				}
			}
		})
	}
}

// privacyClient makes the calls of TestDirectMessagePrivacy as a user:
// with JWT it carries the user's token and leaves the request's user
// empty (the body) or as given (the query); in open mode it names the
// user in the request.
type privacyClient struct {
	t    *testing.T
	jwt  bool
	grpc map[string]api.ChatClient
}

func (p *privacyClient) token(user string) string {
	p.t.Helper()
	tok, err := auth.Mint([]byte(accessSecret), user, nil, time.Hour, "", "")
	if err != nil {
		p.t.Fatal(err)
	}
	return tok
}

// name is the user a request body names: the user in open mode, nobody
// with JWT (the token says).
func (p *privacyClient) name(user string) string {
	if p.jwt {
		return ""
	}
	return user
}

// ctx is a gRPC call's context as user.
func (p *privacyClient) ctx(user string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	p.t.Cleanup(cancel)
	if p.jwt {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+p.token(user))
	}
	return ctx
}

func (p *privacyClient) send(addr, user, room, text string) (*api.Message, error) {
	return p.grpc[addr].Send(p.ctx(user), &api.SendRequest{Room: room, Message: &api.Message{User: p.name(user), Text: text}})
}

// history reads room as user, naming named in the request (with JWT,
// naming another user than the token's is the impersonation case).
func (p *privacyClient) history(addr, user, named, room string) (*api.HistoryResponse, error) {
	return p.grpc[addr].History(p.ctx(user), &api.HistoryRequest{Room: room, User: named})
}

// rest calls the REST route as user (empty: anonymous) and decodes a 200
// answer into out; the body's "user" is set in open mode.
func (p *privacyClient) rest(addr, user, method, path string, body map[string]string, out proto.Message) int {
	p.t.Helper()
	var rd io.Reader
	if body != nil {
		b := map[string]string{}
		for k, v := range body {
			b[k] = v
		}
		if user != "" && !p.jwt {
			b["user"] = user
		}
		j, err := json.Marshal(b)
		if err != nil {
			p.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		p.t.Fatal(err)
	}
	if p.jwt && user != "" {
		req.Header.Set("Authorization", "Bearer "+p.token(user))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := protojson.Unmarshal(b, out); err != nil {
			p.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

func texts(msgs []*api.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetText()
	}
	return out
}
