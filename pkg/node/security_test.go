package node_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"example.com/chat/api"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/certs"
	"example.com/chat/pkg/node"
)

// The HS256 nodes of these tests share one secret and require one audience.
const (
	jwtSecret   = "security-tests-secret-0123456789abcdef"
	jwtAudience = "chat-tests"
)

// testTimeout bounds every wait of one test: a stream, a read, a dial.
const testTimeout = 30 * time.Second

func hsNodeFlags(extra ...string) []string {
	return append([]string{"-jwt-secret", jwtSecret, "-jwt-audience", jwtAudience}, extra...)
}

// mint returns an HS256 token for user signed with jwtSecret for jwtAudience.
func mint(t *testing.T, user string, rooms []string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Mint([]byte(jwtSecret), user, rooms, ttl, "", jwtAudience)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signJWT signs claims with method and key, as an attacker or a foreign
// issuer would.
func signJWT(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func claimsFor(user string, ttl time.Duration) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"sub": user, "iat": now.Unix(), "exp": now.Add(ttl).Unix(), "aud": jwtAudience}
}

// withToken carries tok in the call's "authorization" metadata (nothing when
// tok is empty).
func withToken(ctx context.Context, tok string) context.Context {
	if tok == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

func timeout(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// openStream opens Chat.Stream with tok and sends first. The stream ends
// when ctx does.
func openStream(t *testing.T, ctx context.Context, cc *grpc.ClientConn, tok string, first *api.Message) api.Chat_StreamClient {
	t.Helper()
	s, err := api.NewChatClient(cc).Stream(withToken(ctx, tok))
	if err != nil {
		t.Fatal(err)
	}
	// A rejected stream may already be over: Send then reports io.EOF and
	// Recv the status.
	if err := s.Send(first); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return s
}

// streamEnd receives until the stream ends and returns its status.
func streamEnd(s api.Chat_StreamClient) ([]*api.Message, error) {
	var got []*api.Message
	for {
		m, err := s.Recv()
		if err != nil {
			return got, err
		}
		got = append(got, m)
	}
}

// untilLive receives until KIND_LIVE and returns the frames before it, and
// the LIVE frame.
func untilLive(t *testing.T, s api.Chat_StreamClient) ([]*api.Message, *api.Message) {
	t.Helper()
	var got []*api.Message
	for {
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("before KIND_LIVE: %v", err)
		}
		if m.GetKind() == api.Kind_KIND_LIVE {
			return got, m
		}
		got = append(got, m)
	}
}

// untilAck receives until the acknowledgement of the stream's first
// message (sent with text and join.events): the message is then stored.
func untilAck(t *testing.T, s api.Chat_StreamClient) {
	t.Helper()
	for {
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("before KIND_ACK: %v", err)
		}
		switch m.GetKind() {
		case api.Kind_KIND_ACK:
			return
		case api.Kind_KIND_ERROR:
			t.Fatalf("send refused: %v", m)
		}
	}
}

// wantStatus checks err is a gRPC status with code and a message containing
// msg.
func wantStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("got %v, want %v containing %q", err, code, msg)
	}
}

// watcher is a trusted client in a room. After an attack, settle proves what
// reached the room: it sends a sentinel and collects every frame before it,
// and checks that the room's log holds nothing the watcher did not see.
type watcher struct {
	ctx     context.Context
	chat    api.ChatClient
	s       api.Chat_StreamClient
	tok     string
	user    string
	room    string
	lastSeq uint64
	n       int
	// known are users who legitimately joined: their presence events
	// (join, leave) may reach the room at any time.
	known map[string]bool
}

func watch(t *testing.T, cc *grpc.ClientConn, room, tok, user string) *watcher {
	t.Helper()
	ctx := timeout(t)
	w := &watcher{ctx: ctx, chat: api.NewChatClient(cc), tok: tok, user: user, room: room, known: map[string]bool{user: true}}
	w.s = openStream(t, ctx, cc, tok, &api.Message{Room: room, Join: &api.Join{Events: true}})
	hist, _ := untilLive(t, w.s)
	for _, m := range hist {
		w.lastSeq = max(w.lastSeq, m.GetSeq())
	}
	return w
}

// hsWatch is watch with an HS256 token of its own user.
func hsWatch(t *testing.T, cc *grpc.ClientConn, room string) *watcher {
	t.Helper()
	user := "watch-" + room
	return watch(t, cc, room, mint(t, user, nil, time.Hour), user)
}

// next returns the watcher's next frame, skipping presence events of
// known users.
func (w *watcher) next(t *testing.T) *api.Message {
	t.Helper()
	for {
		m, err := w.s.Recv()
		if err != nil {
			t.Fatalf("watcher in %s: %v", w.room, err)
		}
		if k := m.GetKind(); w.known[m.GetUser()] && (k == api.Kind_KIND_JOIN || k == api.Kind_KIND_LEAVE) {
			continue
		}
		return m
	}
}

// legit marks users whose presence events are expected.
func (w *watcher) legit(users ...string) {
	for _, u := range users {
		w.known[u] = true
	}
}

// settle returns every frame the room delivered since the last settle.
func (w *watcher) settle(t *testing.T) []*api.Message {
	t.Helper()
	w.n++
	text := fmt.Sprintf("sentinel %d", w.n)
	sent, err := w.chat.Send(withToken(w.ctx, w.tok), &api.SendRequest{Room: w.room, Message: &api.Message{Text: text}})
	if err != nil {
		t.Fatalf("watcher send: %v", err)
	}
	var got []*api.Message
	for {
		m := w.next(t)
		if m.GetKind() == api.Kind_KIND_MESSAGE && m.GetUser() == w.user && m.GetText() == text {
			break
		}
		got = append(got, m)
	}
	want := w.lastSeq + 1
	for _, m := range got {
		if m.GetKind() == api.Kind_KIND_MESSAGE {
			if m.GetSeq() != want {
				t.Fatalf("watcher in %s: message %v has id %d, want %d", w.room, m, m.GetSeq(), want)
			}
			want++
		}
	}
	if sent.GetSeq() != want {
		t.Fatalf("watcher in %s: the room stored %d messages the watcher never saw", w.room, sent.GetSeq()-want)
	}
	w.lastSeq = sent.GetSeq()
	return got
}

// assertQuiet fails if anything (message or event) reached the room.
func (w *watcher) assertQuiet(t *testing.T) {
	t.Helper()
	if got := w.settle(t); len(got) > 0 {
		t.Fatalf("watcher in %s got %v, want nothing", w.room, got)
	}
}

// assertMessages checks the chat messages that reached the room since the
// last settle, as "user: text".
func (w *watcher) assertMessages(t *testing.T, want ...string) {
	t.Helper()
	var got []string
	for _, m := range w.settle(t) {
		if m.GetKind() == api.Kind_KIND_MESSAGE {
			got = append(got, m.GetUser()+": "+m.GetText())
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("watcher in %s got messages %q, want %q", w.room, got, want)
	}
}

func wsURL(a node.Addrs, query string) string {
	u := "ws://" + a.HTTP + "/v1/chat/stream"
	if query != "" {
		u += "?" + query
	}
	return u
}

func bearerHeader(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

func wsWrite(t *testing.T, ctx context.Context, c *websocket.Conn, frame string) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		t.Fatal(err)
	}
}

// wsRead reads one frame and decodes it (protojson), also returning it raw.
func wsRead(t *testing.T, ctx context.Context, c *websocket.Conn) (*api.Message, string) {
	t.Helper()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("ws read: %v", err)
	}
	m := new(api.Message)
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, m); err != nil {
		t.Fatalf("ws frame %s: %v", data, err)
	}
	return m, string(data)
}

func wsUntilLive(t *testing.T, ctx context.Context, c *websocket.Conn) ([]*api.Message, *api.Message) {
	t.Helper()
	var got []*api.Message
	for {
		m, _ := wsRead(t, ctx, c)
		if m.GetKind() == api.Kind_KIND_LIVE {
			return got, m
		}
		got = append(got, m)
	}
}

// wsEnd reads until the connection ends and returns its close error.
func wsEnd(ctx context.Context, c *websocket.Conn) error {
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return err
		}
	}
}

func wantClose(t *testing.T, err error, code websocket.StatusCode, reason string) {
	t.Helper()
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code || !strings.Contains(ce.Reason, reason) {
		t.Fatalf("ws ended with %v, want close %d containing %q", err, code, reason)
	}
}

// wsRefused dials and expects the upgrade refused with code and a body
// containing msg.
func wsRefused(t *testing.T, ctx context.Context, url string, opts *websocket.DialOptions, code int, msg string) {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, url, opts)
	if err == nil {
		c.CloseNow()
		t.Fatalf("upgrade accepted, want %d", code)
	}
	if resp == nil {
		t.Fatalf("no response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code || !strings.Contains(string(body), msg) {
		t.Fatalf("upgrade answered %d %q, want %d containing %q", resp.StatusCode, body, code, msg)
	}
	if code == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatal("401 without WWW-Authenticate")
	}
}

// wsJoinRefused expects the first frame refused with an error frame of code
// and a close of closeCode.
func wsJoinRefused(t *testing.T, ctx context.Context, c *websocket.Conn, first string, code codes.Code, msg string, closeCode websocket.StatusCode) {
	t.Helper()
	wsWrite(t, ctx, c, first)
	m, raw := wsRead(t, ctx, c)
	if m.GetError().GetCode() != int32(code) || !strings.Contains(m.GetError().GetMessage(), msg) {
		t.Fatalf("got %s, want error code %d containing %q", raw, code, msg)
	}
	wantClose(t, wsEnd(ctx, c), closeCode, "")
}

func TestJWTOverGRPCAndWebSocket(t *testing.T) {
	t.Parallel()
	a := start(t, hsNodeFlags("-allowed-origins", "good.example")...)
	cc := grpcClient(t, a.GRPC)

	t.Run("valid", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name string
			// send joins the room as user with tok and says text.
			send func(t *testing.T, ctx context.Context, room, user, tok, text string)
		}{
			{"grpc", func(t *testing.T, ctx context.Context, room, user, tok, text string) {
				s := openStream(t, ctx, cc, tok, &api.Message{User: user, Room: room, Text: text, ClientId: "c1", Join: &api.Join{Events: true}})
				for {
					m, err := s.Recv()
					if err != nil {
						t.Fatal(err)
					}
					if m.GetKind() == api.Kind_KIND_ACK {
						if m.GetClientId() != "c1" || m.GetUser() != user {
							t.Fatalf("ack %v", m)
						}
						return
					}
				}
			}},
			{"ws header", func(t *testing.T, ctx context.Context, room, user, tok, text string) {
				c, _, err := websocket.Dial(ctx, wsURL(a, ""), &websocket.DialOptions{HTTPHeader: bearerHeader(tok)})
				if err != nil {
					t.Fatal(err)
				}
				defer c.CloseNow()
				wsSendAcked(t, ctx, c, room, text)
			}},
			{"ws subprotocol", func(t *testing.T, ctx context.Context, room, user, tok, text string) {
				c, resp, err := websocket.Dial(ctx, wsURL(a, ""), &websocket.DialOptions{Subprotocols: []string{auth.Subprotocol, auth.SubprotocolPrefix + tok}})
				if err != nil {
					t.Fatal(err)
				}
				defer c.CloseNow()
				// The token must never be echoed back as the selected protocol.
				if got := resp.Header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != "chat.v1" || c.Subprotocol() != "chat.v1" {
					t.Fatalf("selected subprotocol %q (%q), want chat.v1", got, c.Subprotocol())
				}
				wsSendAcked(t, ctx, c, room, text)
			}},
			{"ws query", func(t *testing.T, ctx context.Context, room, user, tok, text string) {
				c, resp, err := websocket.Dial(ctx, wsURL(a, "access_token="+tok), nil)
				if err != nil {
					t.Fatal(err)
				}
				defer c.CloseNow()
				if p := resp.Header.Get("Sec-WebSocket-Protocol"); p != "" {
					t.Fatalf("subprotocol %q selected, none offered", p)
				}
				wsSendAcked(t, ctx, c, room, text)
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				ctx := timeout(t)
				room := "valid-" + strings.ReplaceAll(tc.name, " ", "-")
				user := "alice-" + strings.ReplaceAll(tc.name, " ", "-")
				w := hsWatch(t, cc, room)
				tc.send(t, ctx, room, user, mint(t, user, nil, time.Hour), "hello from "+tc.name)
				w.assertMessages(t, user+": hello from "+tc.name)
			})
		}
	})

	t.Run("rejected", func(t *testing.T) {
		t.Parallel()
		other := []byte("another-secret-another-secret-0123456789")
		for _, tc := range []struct {
			name, token, msg string
			// streamsOnly: unary calls accept the token (the verifier's
			// clock-skew leeway); streams, which end at expiry, do not.
			streamsOnly bool
		}{
			{"missing", "", "auth: missing token", false},
			{"expired", mint(t, "eve", nil, -time.Hour), "auth: token expired", false},
			{"expired within leeway", signJWT(t, jwt.SigningMethodHS256, []byte(jwtSecret), claimsFor("eve", -5*time.Second)), "auth: token expired", true},
			{"wrong signature", signJWT(t, jwt.SigningMethodHS256, other, claimsFor("eve", time.Hour)), "auth: bad token signature", false},
			{"alg none", signJWT(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claimsFor("eve", time.Hour)), "auth: token algorithm not allowed", false},
			{"HS512", signJWT(t, jwt.SigningMethodHS512, []byte(jwtSecret), claimsFor("eve", time.Hour)), "auth: token algorithm not allowed", false},
			{"wrong audience", func() string {
				tok, err := auth.Mint([]byte(jwtSecret), "eve", nil, time.Hour, "", "another-service")
				if err != nil {
					t.Fatal(err)
				}
				return tok
			}(), "auth: wrong token audience", false},
			{"no expiry", signJWT(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"sub": "eve", "aud": jwtAudience}), "auth: invalid token", false},
			{"malformed", "not-a-jwt", "auth: malformed token", false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				ctx := timeout(t)
				room := "rejected-" + strings.ReplaceAll(tc.name, " ", "-")
				w := hsWatch(t, cc, room)
				w.assertQuiet(t) // the room has history: a rejected stream must not get it

				t.Run("grpc", func(t *testing.T) {
					s := openStream(t, ctx, cc, tc.token, &api.Message{User: "eve", Room: room, Text: "let me in", Join: &api.Join{Events: true}})
					got, err := streamEnd(s)
					wantStatus(t, err, codes.Unauthenticated, tc.msg)
					if len(got) > 0 {
						t.Fatalf("rejected stream received %v", got)
					}
					if tc.streamsOnly {
						return
					}
					_, err = api.NewChatClient(cc).Send(withToken(ctx, tc.token), &api.SendRequest{Room: room, Message: &api.Message{Text: "let me in"}})
					wantStatus(t, err, codes.Unauthenticated, tc.msg)
					_, err = api.NewChatClient(cc).History(withToken(ctx, tc.token), &api.HistoryRequest{Room: room})
					wantStatus(t, err, codes.Unauthenticated, tc.msg)
				})
				t.Run("ws", func(t *testing.T) {
					carriers := map[string]struct {
						url  string
						opts *websocket.DialOptions
					}{
						"header":      {wsURL(a, ""), &websocket.DialOptions{HTTPHeader: bearerHeader(tc.token)}},
						"subprotocol": {wsURL(a, ""), &websocket.DialOptions{Subprotocols: []string{auth.Subprotocol, auth.SubprotocolPrefix + tc.token}}},
						"query":       {wsURL(a, "access_token="+tc.token), nil},
					}
					if tc.token == "" {
						carriers = map[string]struct {
							url  string
							opts *websocket.DialOptions
						}{"none": {wsURL(a, ""), nil}}
					}
					for name, c := range carriers {
						t.Run(name, func(t *testing.T) {
							wsRefused(t, ctx, c.url, c.opts, http.StatusUnauthorized, tc.msg)
						})
					}
				})
				w.assertQuiet(t)
			})
		}
	})

	t.Run("identity", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name     string
			tok      string
			room     string
			first    *api.Message
			msg      string
			restBody string
		}{
			{"spoofed user", mint(t, "mallory", nil, time.Hour), "spoof", &api.Message{User: "alice", Text: "I am alice"}, `user "alice" does not match the authenticated user`, `{"user":"alice","text":"I am alice"}`},
			{"forbidden room", mint(t, "mallory", []string{"lobby"}, time.Hour), "vault", &api.Message{Text: "let me in"}, `may not`, `{"text":"let me in"}`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				ctx := timeout(t)
				w := hsWatch(t, cc, tc.room)
				first := &api.Message{User: tc.first.GetUser(), Text: tc.first.GetText(), Room: tc.room, Join: &api.Join{Events: true}}

				t.Run("grpc stream", func(t *testing.T) {
					got, err := streamEnd(openStream(t, ctx, cc, tc.tok, first))
					wantStatus(t, err, codes.PermissionDenied, tc.msg)
					if len(got) > 0 {
						t.Fatalf("refused stream received %v", got)
					}
				})
				t.Run("grpc send", func(t *testing.T) {
					_, err := api.NewChatClient(cc).Send(withToken(ctx, tc.tok), &api.SendRequest{Room: tc.room, Message: &api.Message{User: tc.first.GetUser(), Text: tc.first.GetText()}})
					wantStatus(t, err, codes.PermissionDenied, tc.msg)
				})
				t.Run("ws", func(t *testing.T) {
					c, _, err := websocket.Dial(ctx, wsURL(a, ""), &websocket.DialOptions{HTTPHeader: bearerHeader(tc.tok)})
					if err != nil {
						t.Fatal(err)
					}
					defer c.CloseNow()
					b, _ := protojson.Marshal(first)
					wsJoinRefused(t, ctx, c, string(b), codes.PermissionDenied, tc.msg, websocket.StatusPolicyViolation)
				})
				t.Run("rest", func(t *testing.T) {
					code, body := rest(t, http.DefaultClient, http.MethodPost, "http://"+a.HTTP+"/v1/rooms/"+tc.room+"/messages", tc.tok, tc.restBody)
					if code != http.StatusForbidden || !strings.Contains(body, "does not match") && !strings.Contains(body, "may not") {
						t.Fatalf("POST: %d %s", code, body)
					}
				})
				w.assertQuiet(t)
			})
		}
	})

	t.Run("rooms claim", func(t *testing.T) {
		t.Parallel()
		ctx := timeout(t)
		tok := mint(t, "roomy", []string{"allowed"}, time.Hour)
		w := hsWatch(t, cc, "allowed")
		w.legit("roomy")
		s := openStream(t, ctx, cc, tok, &api.Message{Room: "allowed", Text: "inside", Join: &api.Join{Events: true}})
		untilAck(t, s)
		w.assertMessages(t, "roomy: inside")
		// History of a room outside the claim is as forbidden as joining it.
		w2 := hsWatch(t, cc, "closed")
		_, err := api.NewChatClient(cc).History(withToken(ctx, tok), &api.HistoryRequest{Room: "closed"})
		wantStatus(t, err, codes.PermissionDenied, `may not`)
		if _, err := api.NewChatClient(cc).History(withToken(ctx, tok), &api.HistoryRequest{Room: "allowed"}); err != nil {
			t.Fatal(err)
		}
		code, body := rest(t, http.DefaultClient, http.MethodGet, "http://"+a.HTTP+"/v1/rooms/closed/messages", tok, "")
		if code != http.StatusForbidden {
			t.Fatalf("GET closed room: %d %s", code, body)
		}
		w2.assertQuiet(t)
	})

	t.Run("origin", func(t *testing.T) {
		t.Parallel()
		ctx := timeout(t)
		w := hsWatch(t, cc, "origins")
		tok := mint(t, "browser", nil, time.Hour)
		for _, origin := range []string{"https://evil.example", "http://127.0.0.1.evil.example", "https://good.example.evil.example"} {
			h := bearerHeader(tok)
			h.Set("Origin", origin)
			wsRefused(t, ctx, wsURL(a, ""), &websocket.DialOptions{HTTPHeader: h}, http.StatusForbidden, "not authorized")
		}
		w.assertQuiet(t)
		for _, origin := range []string{"https://good.example", "http://" + a.HTTP} {
			h := bearerHeader(tok)
			h.Set("Origin", origin)
			c, _, err := websocket.Dial(ctx, wsURL(a, ""), &websocket.DialOptions{HTTPHeader: h})
			if err != nil {
				t.Fatalf("origin %s: %v", origin, err)
			}
			w.legit("browser")
			wsSendAcked(t, ctx, c, "origins", "from "+origin)
			c.Close(websocket.StatusNormalClosure, "")
			w.assertMessages(t, "browser: from "+origin)
		}
	})

	t.Run("rest", func(t *testing.T) {
		t.Parallel()
		w := hsWatch(t, cc, "rest")
		url := "http://" + a.HTTP + "/v1/rooms/rest/messages"
		for _, tc := range []struct {
			name, method, tok, body string
			code                    int
			want                    string
		}{
			{"post without token", http.MethodPost, "", `{"text":"anonymous"}`, http.StatusUnauthorized, "auth: missing token"},
			{"get without token", http.MethodGet, "", "", http.StatusUnauthorized, "auth: missing token"},
			{"post expired", http.MethodPost, mint(t, "eve", nil, -time.Hour), `{"text":"late"}`, http.StatusUnauthorized, "auth: token expired"},
			{"post forged", http.MethodPost, signJWT(t, jwt.SigningMethodHS256, []byte("forged-forged-forged-forged-forged-1234"), claimsFor("eve", time.Hour)), `{"text":"forged"}`, http.StatusUnauthorized, "auth: bad token signature"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, body := rest(t, http.DefaultClient, tc.method, url, tc.tok, tc.body)
				if code != tc.code || !strings.Contains(body, tc.want) {
					t.Fatalf("%d %s, want %d containing %q", code, body, tc.code, tc.want)
				}
			})
		}
		w.assertQuiet(t)
		tok := mint(t, "poster", nil, time.Hour)
		code, body := rest(t, http.DefaultClient, http.MethodPost, url, tok, `{"text":"with token"}`)
		if code != http.StatusOK || !strings.Contains(body, `"user":"poster"`) {
			t.Fatalf("POST with token: %d %s", code, body)
		}
		w.assertMessages(t, "poster: with token")
		code, body = rest(t, http.DefaultClient, http.MethodGet, url, tok, "")
		if code != http.StatusOK || !strings.Contains(body, `"text":"with token"`) {
			t.Fatalf("GET with token: %d %s", code, body)
		}
	})
}

// clientIDs numbers the sends of wsSendAcked: a repeated client id would
// be an idempotent retry.
var clientIDs atomic.Int64

// wsSendAcked joins room with events on c, says text and waits for its ack.
func wsSendAcked(t *testing.T, ctx context.Context, c *websocket.Conn, room, text string) {
	t.Helper()
	wsWrite(t, ctx, c, fmt.Sprintf(`{"room":%q,"join":{"events":true,"noHistory":true}}`, room))
	wsUntilLive(t, ctx, c)
	id := fmt.Sprint("w", clientIDs.Add(1))
	wsWrite(t, ctx, c, fmt.Sprintf(`{"text":%q,"clientId":%q}`, text, id))
	for {
		m, raw := wsRead(t, ctx, c)
		switch m.GetKind() {
		case api.Kind_KIND_ACK:
			if m.GetClientId() != id {
				t.Fatalf("ack %s", raw)
			}
			return
		case api.Kind_KIND_ERROR:
			t.Fatalf("send refused: %s", raw)
		}
	}
}

// rest does one REST call with tok (if any) in the Authorization header.
func rest(t *testing.T, client *http.Client, method, url, tok, body string) (int, string) {
	t.Helper()
	ctx := timeout(t)
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// writePublicKey writes pub as a PKIX PEM file and returns its path and
// bytes.
func writePublicKey(t *testing.T, pub any) (string, []byte) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	p := filepath.Join(t.TempDir(), "jwt-pub.pem")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func TestJWTPublicKeys(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, rsaPEM := writePublicKey(t, &rsaKey.PublicKey)
	ecPub, ecPEM := writePublicKey(t, &ecKey.PublicKey)

	type attack struct {
		name, token, msg string
	}
	for _, tc := range []struct {
		name    string
		keyFile string
		valid   func(user string) string
		attacks []attack
	}{
		{"RS256", rsaPub, func(u string) string { return signJWT(t, jwt.SigningMethodRS256, rsaKey, claimsFor(u, time.Hour)) }, []attack{
			// The classic key confusion: the public key, which anyone has, as an HMAC secret.
			{"HS256 with the public key as secret", signJWT(t, jwt.SigningMethodHS256, rsaPEM, claimsFor("eve", time.Hour)), "auth: token algorithm not allowed"},
			{"another RSA key", signJWT(t, jwt.SigningMethodRS256, otherRSA, claimsFor("eve", time.Hour)), "auth: bad token signature"},
			{"PS256 same key", signJWT(t, jwt.SigningMethodPS256, rsaKey, claimsFor("eve", time.Hour)), "auth: token algorithm not allowed"},
			{"ES256", signJWT(t, jwt.SigningMethodES256, ecKey, claimsFor("eve", time.Hour)), "auth: token algorithm not allowed"},
			{"alg none", signJWT(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claimsFor("eve", time.Hour)), "auth: token algorithm not allowed"},
			{"expired", signJWT(t, jwt.SigningMethodRS256, rsaKey, claimsFor("eve", -time.Hour)), "auth: token expired"},
		}},
		{"ES256", ecPub, func(u string) string { return signJWT(t, jwt.SigningMethodES256, ecKey, claimsFor(u, time.Hour)) }, []attack{
			{"HS256 with the public key as secret", signJWT(t, jwt.SigningMethodHS256, ecPEM, claimsFor("eve", time.Hour)), "auth: token algorithm not allowed"},
			{"another EC key", signJWT(t, jwt.SigningMethodES256, otherEC, claimsFor("eve", time.Hour)), "auth: bad token signature"},
			{"RS256", signJWT(t, jwt.SigningMethodRS256, rsaKey, claimsFor("eve", time.Hour)), "auth: token algorithm not allowed"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := start(t, "-jwt-public-key", tc.keyFile)
			cc := grpcClient(t, a.GRPC)
			w := watch(t, cc, "keys", tc.valid("keywatch"), "keywatch")

			t.Run("valid", func(t *testing.T) {
				ctx := timeout(t)
				w.legit("grpc-user", "ws-user")
				s := openStream(t, ctx, cc, tc.valid("grpc-user"), &api.Message{Room: "keys", Text: "signed by " + tc.name, Join: &api.Join{Events: true}})
				untilAck(t, s)
				c, _, err := websocket.Dial(ctx, wsURL(a, ""), &websocket.DialOptions{Subprotocols: []string{auth.Subprotocol, auth.SubprotocolPrefix + tc.valid("ws-user")}})
				if err != nil {
					t.Fatal(err)
				}
				defer c.CloseNow()
				wsSendAcked(t, ctx, c, "keys", "ws signed by "+tc.name)
				w.assertMessages(t, "grpc-user: signed by "+tc.name, "ws-user: ws signed by "+tc.name)
			})
			for _, at := range tc.attacks {
				t.Run(at.name, func(t *testing.T) {
					ctx := timeout(t)
					got, err := streamEnd(openStream(t, ctx, cc, at.token, &api.Message{Room: "keys", Text: "forged", Join: &api.Join{Events: true}}))
					wantStatus(t, err, codes.Unauthenticated, at.msg)
					if len(got) > 0 {
						t.Fatalf("rejected stream received %v", got)
					}
					wsRefused(t, ctx, wsURL(a, ""), &websocket.DialOptions{HTTPHeader: bearerHeader(at.token)}, http.StatusUnauthorized, at.msg)
					w.assertQuiet(t)
				})
			}
		})
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	a := start(t, hsNodeFlags("-send-rate", "2", "-send-burst", "2", "-max-streams-per-user", "2")...)
	cc := grpcClient(t, a.GRPC)

	// waitRetry honours a retry hint: the server asked for this pause.
	waitRetry := func(t *testing.T, ctx context.Context, e *api.Error) {
		t.Helper()
		select {
		case <-time.After(time.Duration(e.GetRetryAfterMs()) * time.Millisecond):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	wantRateError := func(t *testing.T, m *api.Message, clientID string) {
		t.Helper()
		e := m.GetError()
		if m.GetKind() != api.Kind_KIND_ERROR || e.GetCode() != int32(codes.ResourceExhausted) || e.GetRetryAfterMs() <= 0 || !strings.HasPrefix(e.GetMessage(), "rate limit") || m.GetClientId() != clientID {
			t.Fatalf("got %v, want a rate limit error for %s", m, clientID)
		}
	}

	t.Run("rate grpc events", func(t *testing.T) {
		t.Parallel()
		ctx := timeout(t)
		w := hsWatch(t, cc, "rate-events")
		s := openStream(t, ctx, cc, mint(t, "chatty", nil, time.Hour), &api.Message{Room: "rate-events", Join: &api.Join{Events: true, NoHistory: true}})
		untilLive(t, s)
		for i := 1; i <= 3; i++ {
			if err := s.Send(&api.Message{Text: fmt.Sprint("m", i), ClientId: fmt.Sprint("c", i)}); err != nil {
				t.Fatal(err)
			}
		}
		var got []*api.Message
		for len(got) < 3 {
			m, err := s.Recv()
			if err != nil {
				t.Fatalf("stream ended: %v", err)
			}
			if k := m.GetKind(); k == api.Kind_KIND_ACK || k == api.Kind_KIND_ERROR {
				got = append(got, m)
			}
		}
		if got[0].GetKind() != api.Kind_KIND_ACK || got[0].GetClientId() != "c1" || got[1].GetKind() != api.Kind_KIND_ACK || got[1].GetClientId() != "c2" {
			t.Fatalf("got %v, want acks for c1, c2", got)
		}
		wantRateError(t, got[2], "c3")
		w.assertMessages(t, "chatty: m1", "chatty: m2")
		// The stream goes on: after the hinted pause a send is accepted.
		waitRetry(t, ctx, got[2].GetError())
		if err := s.Send(&api.Message{Text: "m4", ClientId: "c4"}); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := s.Recv()
			if err != nil {
				t.Fatalf("stream ended: %v", err)
			}
			if m.GetKind() == api.Kind_KIND_ERROR {
				t.Fatalf("after the pause: %v", m)
			}
			if m.GetKind() == api.Kind_KIND_ACK && m.GetClientId() == "c4" {
				break
			}
		}
		w.assertMessages(t, "chatty: m4")
	})

	t.Run("rate grpc seed", func(t *testing.T) {
		t.Parallel()
		ctx := timeout(t)
		w := hsWatch(t, cc, "rate-seed")
		s := openStream(t, ctx, cc, mint(t, "seedy", nil, time.Hour), &api.Message{User: "seedy", Room: "rate-seed", Text: "s1"})
		for _, text := range []string{"s2", "s3"} {
			if err := s.Send(&api.Message{Text: text}); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
		}
		_, err := streamEnd(s)
		wantStatus(t, err, codes.ResourceExhausted, "rate limit")
		w.assertMessages(t, "seedy: s1", "seedy: s2")
	})

	t.Run("rate ws", func(t *testing.T) {
		t.Parallel()
		ctx := timeout(t)
		w := hsWatch(t, cc, "rate-ws")
		c, _, err := websocket.Dial(ctx, wsURL(a, ""), &websocket.DialOptions{HTTPHeader: bearerHeader(mint(t, "wsy", nil, time.Hour))})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		wsWrite(t, ctx, c, `{"room":"rate-ws","join":{"events":true,"noHistory":true}}`)
		wsUntilLive(t, ctx, c)
		for i := 1; i <= 3; i++ {
			wsWrite(t, ctx, c, fmt.Sprintf(`{"text":"w%d","clientId":"c%d"}`, i, i))
		}
		var got []*api.Message
		var raw []string
		for len(got) < 3 {
			m, r := wsRead(t, ctx, c)
			if k := m.GetKind(); k == api.Kind_KIND_ACK || k == api.Kind_KIND_ERROR {
				got, raw = append(got, m), append(raw, r)
			}
		}
		if got[0].GetClientId() != "c1" || got[0].GetKind() != api.Kind_KIND_ACK || got[1].GetClientId() != "c2" || got[1].GetKind() != api.Kind_KIND_ACK {
			t.Fatalf("got %q, want acks for c1, c2", raw)
		}
		wantRateError(t, got[2], "c3")
		for _, want := range []string{`"kind":"KIND_ERROR"`, `"code":8`, `"message":"rate limit`, `"retryAfterMs":`} {
			if !strings.Contains(raw[2], want) {
				t.Fatalf("error frame %s lacks %s", raw[2], want)
			}
		}
		w.assertMessages(t, "wsy: w1", "wsy: w2")
		waitRetry(t, ctx, got[2].GetError())
		wsWrite(t, ctx, c, `{"text":"w4","clientId":"c4"}`)
		for {
			m, r := wsRead(t, ctx, c)
			if m.GetKind() == api.Kind_KIND_ERROR {
				t.Fatalf("after the pause: %s", r)
			}
			if m.GetKind() == api.Kind_KIND_ACK && m.GetClientId() == "c4" {
				break
			}
		}
		w.assertMessages(t, "wsy: w4")
	})

	t.Run("streams per user", func(t *testing.T) {
		t.Parallel()
		ctx := timeout(t)
		w := hsWatch(t, cc, "streams")
		tok := mint(t, "multi", nil, time.Hour)
		join := &api.Message{Room: "streams", Join: &api.Join{Events: true, NoHistory: true}}
		sctx, cancel1 := context.WithCancel(ctx)
		defer cancel1()
		s1 := openStream(t, sctx, cc, tok, join)
		untilLive(t, s1)
		s2 := openStream(t, ctx, cc, tok, join)
		untilLive(t, s2)
		w.legit("multi")

		_, err := streamEnd(openStream(t, ctx, cc, tok, &api.Message{Room: "streams", Text: "third", Join: &api.Join{Events: true}}))
		wantStatus(t, err, codes.ResourceExhausted, "too many streams")
		c, _, err := websocket.Dial(ctx, wsURL(a, ""), &websocket.DialOptions{HTTPHeader: bearerHeader(tok)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		wsJoinRefused(t, ctx, c, `{"room":"streams","text":"fourth"}`, codes.ResourceExhausted, "too many streams", websocket.StatusTryAgainLater)
		w.assertQuiet(t)

		// Refused streams took no slot: once one stream ends, another fits.
		// The hub frees the slot just after the stream's end reaches the
		// client, so a refusal in that window is retried (bounded by ctx).
		if err := s1.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := streamEnd(s1); err != io.EOF {
			t.Fatalf("closed stream ended with %v", err)
		}
		for attempt := 1; ; attempt++ {
			s3 := openStream(t, ctx, cc, tok, &api.Message{Room: "streams", Join: &api.Join{Events: true, NoHistory: true}})
			m, err := s3.Recv()
			if status.Code(err) == codes.ResourceExhausted && ctx.Err() == nil {
				t.Logf("attempt %d: %v", attempt, err)
				continue
			}
			if err != nil || m.GetKind() != api.Kind_KIND_LIVE {
				t.Fatalf("after a stream ended: %v %v", m, err)
			}
			if err := s3.Send(&api.Message{Text: "fits now"}); err != nil {
				t.Fatal(err)
			}
			untilAck(t, s3)
			break
		}
		w.assertMessages(t, "multi: fits now")
	})
}

func TestTokenExpiresMidStream(t *testing.T) {
	t.Parallel()
	a := start(t, hsNodeFlags()...)
	cc := grpcClient(t, a.GRPC)
	ctx := timeout(t)
	const room = "expiry"
	w := hsWatch(t, cc, room)
	sender := mint(t, "sender", nil, time.Hour)
	send := func(text string) uint64 {
		t.Helper()
		m, err := api.NewChatClient(cc).Send(withToken(ctx, sender), &api.SendRequest{Room: room, Message: &api.Message{Text: text}})
		if err != nil {
			t.Fatal(err)
		}
		return m.GetSeq()
	}

	// Tokens good for about 2 s (exp has whole-second precision).
	short := 3 * time.Second
	gs := openStream(t, ctx, cc, mint(t, "mobile", nil, short), &api.Message{Room: room, Join: &api.Join{Events: true, NoHistory: true}})
	_, live := untilLive(t, gs)
	epoch := live.GetEpoch()
	wc, _, err := websocket.Dial(ctx, wsURL(a, ""), &websocket.DialOptions{Subprotocols: []string{auth.Subprotocol, auth.SubprotocolPrefix + mint(t, "browser", nil, short)}})
	if err != nil {
		t.Fatal(err)
	}
	defer wc.CloseNow()
	wsWrite(t, ctx, wc, `{"room":"expiry","join":{"events":true,"noHistory":true}}`)
	wsUntilLive(t, ctx, wc)

	seq1 := send("m1")
	for {
		m, err := gs.Recv()
		if err != nil {
			t.Fatalf("grpc before m1: %v (token expired too soon?)", err)
		}
		if m.GetKind() == api.Kind_KIND_MESSAGE {
			if m.GetText() != "m1" || m.GetSeq() != seq1 {
				t.Fatalf("grpc got %v", m)
			}
			break
		}
	}
	for {
		m, raw := wsRead(t, ctx, wc)
		if m.GetKind() == api.Kind_KIND_MESSAGE {
			if m.GetText() != "m1" || m.GetSeq() != seq1 {
				t.Fatalf("ws got %s", raw)
			}
			break
		}
	}

	// Both streams end when their tokens expire (the wait is bounded by ctx).
	got, err := streamEnd(gs)
	wantStatus(t, err, codes.Unauthenticated, "token expired")
	for _, m := range got {
		if m.GetKind() == api.Kind_KIND_MESSAGE {
			t.Fatalf("grpc got %v after m1", m)
		}
	}
	wantClose(t, wsEnd(ctx, wc), websocket.StatusPolicyViolation, "token expired")

	// What they miss while reconnecting...
	seq2, seq3 := send("m2"), send("m3")

	// ...a fresh token and a resume replay exactly.
	gs2 := openStream(t, ctx, cc, mint(t, "mobile", nil, time.Hour), &api.Message{Room: room, Join: &api.Join{Events: true, AfterSeq: seq1, Epoch: epoch}})
	replay, _ := untilLive(t, gs2)
	if len(replay) != 2 || replay[0].GetText() != "m2" || replay[0].GetSeq() != seq2 || replay[1].GetText() != "m3" || replay[1].GetSeq() != seq3 {
		t.Fatalf("grpc resume replayed %v, want m2, m3", replay)
	}
	wc2, _, err := websocket.Dial(ctx, wsURL(a, ""), &websocket.DialOptions{Subprotocols: []string{auth.Subprotocol, auth.SubprotocolPrefix + mint(t, "browser", nil, time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	defer wc2.CloseNow()
	wsWrite(t, ctx, wc2, fmt.Sprintf(`{"room":"expiry","join":{"events":true,"afterSeq":"%d","epoch":%q}}`, seq1, epoch))
	wreplay, _ := wsUntilLive(t, ctx, wc2)
	if len(wreplay) != 2 || wreplay[0].GetText() != "m2" || wreplay[0].GetSeq() != seq2 || wreplay[1].GetText() != "m3" || wreplay[1].GetSeq() != seq3 {
		t.Fatalf("ws resume replayed %v, want m2, m3", wreplay)
	}
	// The expired streams sent nothing; the room saw exactly the sender's.
	w.legit("mobile", "browser")
	w.assertMessages(t, "sender: m1", "sender: m2", "sender: m3")
}

// caPool loads a CA file.
func caPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s holds no certificate", file)
	}
	return pool
}

func grpcTLSClient(t *testing.T, addr string, pool *x509.CertPool) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func httpsClient(t *testing.T, pool *x509.CertPool) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	dirA, dirB := t.TempDir(), t.TempDir()
	hosts := []string{"localhost", "127.0.0.1"}
	if err := certs.Generate(dirA, hosts, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := certs.Generate(dirB, hosts, time.Hour); err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dirA, certs.ServerFile), filepath.Join(dirA, certs.ServerKeyFile)
	poolA, poolB := caPool(t, filepath.Join(dirA, certs.CAFile)), caPool(t, filepath.Join(dirB, certs.CAFile))
	tok := mint(t, "tls-user", nil, time.Hour)

	t.Run("gateway trusts the CA", func(t *testing.T) {
		t.Parallel()
		ctx := timeout(t)
		a := start(t, hsNodeFlags("-tls-cert", cert, "-tls-key", key, "-tls-ca", filepath.Join(dirA, certs.CAFile))...)
		cc := grpcTLSClient(t, a.GRPC, poolA)
		w := hsWatch(t, cc, "tls")
		w.legit("tls-user")
		s := openStream(t, ctx, cc, tok, &api.Message{Room: "tls", Text: "over tls", Join: &api.Join{Events: true}})
		untilAck(t, s)
		w.assertMessages(t, "tls-user: over tls")

		code, body := rest(t, http.DefaultClient, http.MethodPost, "http://"+a.HTTP+"/v1/rooms/tls/messages", tok, `{"text":"through the gateway"}`)
		if code != http.StatusOK {
			t.Fatalf("POST through the TLS gateway hop: %d %s", code, body)
		}
		w.assertMessages(t, "tls-user: through the gateway")
		code, body = rest(t, http.DefaultClient, http.MethodGet, "http://"+a.HTTP+"/v1/rooms/tls/messages", tok, "")
		if code != http.StatusOK || !strings.Contains(body, "through the gateway") {
			t.Fatalf("GET through the TLS gateway hop: %d %s", code, body)
		}

		// Clients that do not trust the server's CA get nowhere.
		for name, cc := range map[string]*grpc.ClientConn{
			"plaintext": grpcClient(t, a.GRPC),
			"other CA":  grpcTLSClient(t, a.GRPC, poolB),
		} {
			_, err := api.NewChatClient(cc).Send(withToken(ctx, tok), &api.SendRequest{Room: "tls", Message: &api.Message{Text: "untrusted " + name}})
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("%s client: %v, want Unavailable", name, err)
			}
		}
		w.assertQuiet(t)
	})

	t.Run("gateway distrusts the server", func(t *testing.T) {
		t.Parallel()
		ctx := timeout(t)
		a := start(t, hsNodeFlags("-tls-cert", cert, "-tls-key", key, "-tls-ca", filepath.Join(dirB, certs.CAFile))...)
		cc := grpcTLSClient(t, a.GRPC, poolA)
		w := hsWatch(t, cc, "tls-bad-ca")
		code, body := rest(t, http.DefaultClient, http.MethodPost, "http://"+a.HTTP+"/v1/rooms/tls-bad-ca/messages", tok, `{"text":"must not pass"}`)
		if code != http.StatusServiceUnavailable {
			t.Fatalf("POST with the gateway distrusting the server: %d %s, want 503", code, body)
		}
		code, body = rest(t, http.DefaultClient, http.MethodGet, "http://"+a.HTTP+"/v1/rooms/tls-bad-ca/messages", tok, "")
		if code != http.StatusServiceUnavailable {
			t.Fatalf("GET with the gateway distrusting the server: %d %s, want 503", code, body)
		}
		w.assertQuiet(t)
		// Direct gRPC with the right CA still works.
		if _, err := api.NewChatClient(cc).Send(withToken(ctx, tok), &api.SendRequest{Room: "tls-bad-ca", Message: &api.Message{Text: "direct"}}); err != nil {
			t.Fatal(err)
		}
		w.assertMessages(t, "tls-user: direct")
	})

	t.Run("https and wss", func(t *testing.T) {
		t.Parallel()
		ctx := timeout(t)
		a := start(t, hsNodeFlags("-http-tls-cert", cert, "-http-tls-key", key)...)
		cc := grpcClient(t, a.GRPC)
		w := hsWatch(t, cc, "wss")
		client := httpsClient(t, poolA)
		if code, body := rest(t, client, http.MethodGet, "https://"+a.HTTP+"/healthz", "", ""); code != http.StatusOK {
			t.Fatalf("https healthz: %d %s", code, body)
		}
		if code, body := rest(t, client, http.MethodPost, "https://"+a.HTTP+"/v1/rooms/wss/messages", tok, `{"text":"https post"}`); code != http.StatusOK {
			t.Fatalf("https POST: %d %s", code, body)
		}
		w.assertMessages(t, "tls-user: https post")

		c, _, err := websocket.Dial(ctx, "wss://"+a.HTTP+"/v1/chat/stream", &websocket.DialOptions{HTTPClient: client, HTTPHeader: bearerHeader(tok)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		w.legit("tls-user")
		wsSendAcked(t, ctx, c, "wss", "over wss")
		w.assertMessages(t, "tls-user: over wss")

		// A client without the CA cannot connect; plain HTTP is refused.
		untrusted := httpsClient(t, poolB)
		var uerr x509.UnknownAuthorityError
		if _, _, err := websocket.Dial(ctx, "wss://"+a.HTTP+"/v1/chat/stream", &websocket.DialOptions{HTTPClient: untrusted, HTTPHeader: bearerHeader(tok)}); !errors.As(err, &uerr) {
			t.Fatalf("wss with another CA: %v, want unknown authority", err)
		}
		if code, _ := rest(t, http.DefaultClient, http.MethodGet, "http://"+a.HTTP+"/healthz", "", ""); code != http.StatusBadRequest {
			t.Fatalf("plain http to the https listener: %d, want 400", code)
		}
		w.assertQuiet(t)
	})
}

func TestSubcommands(t *testing.T) {
	t.Parallel()
	noenv := func(string) string { return "" }

	t.Run("token", func(t *testing.T) {
		t.Parallel()
		v, err := auth.NewVerifier(auth.Config{HMACSecret: []byte(jwtSecret), Audience: "aud-x"})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name   string
			args   []string
			env    map[string]string
			rooms  []string
			expire time.Duration
		}{
			{"flags", []string{"token", "-user", "alice", "-secret", jwtSecret, "-ttl", "1h", "-rooms", "a, b", "-audience", "aud-x"}, nil, []string{"a", "b"}, time.Hour},
			{"env secret", []string{"token", "-user", "alice", "-ttl", "10m"}, map[string]string{"CHAT_JWT_SECRET": jwtSecret, "CHAT_JWT_AUDIENCE": "aud-x"}, nil, 10 * time.Minute},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var out, errOut bytes.Buffer
				if err := node.Main(context.Background(), tc.args, func(k string) string { return tc.env[k] }, &out, &errOut); err != nil {
					t.Fatalf("%v: %s", err, errOut.String())
				}
				c, err := v.Verify(strings.TrimSpace(out.String()))
				if err != nil {
					t.Fatalf("minted token %q: %v", out.String(), err)
				}
				if c.User != "alice" || !slices.Equal(c.Rooms, tc.rooms) || time.Until(c.Expires) > tc.expire || time.Until(c.Expires) < tc.expire-time.Minute {
					t.Fatalf("claims %+v", c)
				}
				other, _ := auth.NewVerifier(auth.Config{HMACSecret: []byte("a-different-secret-a-different-secret"), Audience: "aud-x"})
				if _, err := other.Verify(strings.TrimSpace(out.String())); !errors.Is(err, auth.ErrSignature) {
					t.Fatalf("another secret verified the token: %v", err)
				}
			})
		}
		if err := node.Main(context.Background(), []string{"token", "-user", "alice"}, noenv, io.Discard, io.Discard); err == nil {
			t.Fatal("token without a secret: want an error")
		}
	})

	t.Run("certs", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "out")
		var out bytes.Buffer
		if err := node.Main(context.Background(), []string{"certs", "-dir", dir}, noenv, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		want := []string{certs.CAKeyFile, certs.CAFile, certs.ServerKeyFile, certs.ServerFile}
		slices.Sort(want)
		if !slices.Equal(names, want) {
			t.Fatalf("wrote %v, want %v", names, want)
		}
		for _, k := range []string{certs.CAKeyFile, certs.ServerKeyFile} {
			if fi, err := os.Stat(filepath.Join(dir, k)); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: %v %v, want mode 0600", k, fi.Mode(), err)
			}
		}
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, certs.ServerFile), filepath.Join(dir, certs.ServerKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, host := range []string{"127.0.0.1", "localhost"} {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: caPool(t, filepath.Join(dir, certs.CAFile)), DNSName: host}); err != nil {
				t.Fatalf("server certificate for %s: %v", host, err)
			}
		}
	})

	t.Run("healthcheck", func(t *testing.T) {
		t.Parallel()
		a := start(t)
		if err := node.Main(context.Background(), []string{"healthcheck", "-url", "http://" + a.HTTP + "/readyz"}, noenv, io.Discard, io.Discard); err != nil {
			t.Fatalf("running node: %v", err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := ln.Addr().String()
		ln.Close()
		if err := node.Main(context.Background(), []string{"healthcheck", "-url", "http://" + closed + "/readyz"}, noenv, io.Discard, io.Discard); err == nil {
			t.Fatal("closed port: want an error")
		}
		if err := node.Main(context.Background(), []string{"healthcheck", "-url", "http://" + a.HTTP + "/nope"}, noenv, io.Discard, io.Discard); err == nil {
			t.Fatal("404: want an error")
		}
	})
}
