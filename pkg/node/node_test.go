package node_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs a node on loopback ports and stops it at cleanup.
func start(t *testing.T, extra ...string) node.Addrs {
	t.Helper()
	// The default rate limit, unless a test sets one.
	return testutil.StartNode(t, append([]string{"-send-rate", "20"}, extra...)...)
}

func grpcClient(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// joinLive opens a Chat stream on cc as user, asking for events, and reads
// until the join is live.
func joinLive(ctx context.Context, t *testing.T, cc *grpc.ClientConn, user string) grpc.BidiStreamingClient[api.Message, api.Message] {
	t.Helper()
	gs, err := api.NewChatClient(cc).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := gs.Send(&api.Message{User: user, Join: &api.Join{Events: true}}); err != nil {
		t.Fatal(err)
	}
	for m, err := gs.Recv(); m.GetKind() != api.Kind_KIND_LIVE; m, err = gs.Recv() {
		if err != nil {
			t.Fatal(err)
		}
	}
	return gs
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestGRPCAndWebSocketTalk(t *testing.T) {
	t.Parallel()
	a := start(t)
	cc := grpcClient(t, a.GRPC)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gs := joinLive(ctx, t, cc, "mobile")
	wc, _, err := websocket.Dial(ctx, "ws://"+a.HTTP+"/v1/chat/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.CloseNow()
	if err := wc.Write(ctx, websocket.MessageText, []byte(`{"user":"web","text":"hi","ts":1}`)); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := gs.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetKind() == api.Kind_KIND_MESSAGE {
			if m.GetText() != "hi" || m.GetUser() != "web" {
				t.Fatalf("grpc got %v", m)
			}
			break
		}
	}
	if err := gs.Send(&api.Message{Text: "hello browser"}); err != nil {
		t.Fatal(err)
	}
	_, data, err := wc.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil || got["text"] != "hello browser" || got["user"] != "mobile" {
		t.Fatalf("browser got %s (%v)", data, err)
	}
}

func TestRESTThroughGateway(t *testing.T) {
	t.Parallel()
	a := start(t)
	resp, err := http.Post("http://"+a.HTTP+"/v1/rooms/lobby/messages", "application/json", strings.NewReader(`{"user":"rest","text":"posted"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"seq":1`) {
		t.Fatalf("POST: %d %s", resp.StatusCode, body)
	}
	code, body2 := get(t, "http://"+a.HTTP+"/v1/rooms/lobby/messages?limit=10")
	// ts and seq are JSON numbers, as on the WebSocket stream.
	var h struct {
		Messages []struct {
			User, Text string
			Seq, Ts    json.Number
		}
	}
	if err := json.Unmarshal([]byte(body2), &h); code != 200 || err != nil || len(h.Messages) != 1 || h.Messages[0].Text != "posted" || h.Messages[0].User != "rest" {
		t.Fatalf("GET: %d %s (%v)", code, body2, err)
	}
	if h.Messages[0].Seq != "1" || !strings.Contains(body2, `"seq":1`) || !regexp.MustCompile(`"ts":\d{13}`).MatchString(body2) {
		t.Fatalf("GET: seq and ts are not JSON numbers: %s", body2)
	}
	code, body2 = get(t, "http://"+a.HTTP+"/v1/rooms/bad%20room/messages")
	if code != http.StatusBadRequest || !strings.Contains(body2, "room name") {
		t.Fatalf("bad room: %d %s", code, body2)
	}
}

func TestHealthReadinessMetricsAndPage(t *testing.T) {
	t.Parallel()
	a := start(t)
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, "http://"+a.HTTP+p); code != 200 {
			t.Fatalf("%s: %d %s", p, code, body)
		}
	}
	code, body := get(t, "http://"+a.HTTP+"/metrics")
	for _, want := range []string{"active_users", "chat_hub_disconnects_total", "go_goroutines"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
	code, body = get(t, "http://"+a.HTTP+"/")
	if code != 200 || !strings.Contains(strings.ToLower(body), "<html") {
		t.Fatalf("page: %d", code)
	}
	cc := grpcClient(t, a.GRPC)
	hr, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "chat.Chat"})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hr, err)
	}
}

func TestShutdownTellsClientsToReconnect(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan node.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- node.Run(ctx, []string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0"}, func(string) string { return "" }, io.Discard, func(a node.Addrs) { addrs <- a })
	}()
	a := <-addrs
	cc := grpcClient(t, a.GRPC)
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	gs := joinLive(sctx, t, cc, "u")
	wc, _, err := websocket.Dial(sctx, "ws://"+a.HTTP+"/v1/chat/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	wc.Write(sctx, websocket.MessageText, []byte(`{"user":"w","join":{"noHistory":true,"events":true}}`))
	if _, data, err := wc.Read(sctx); err != nil || !strings.Contains(string(data), "KIND_LIVE") {
		t.Fatalf("ws join: %s %v", data, err)
	}
	cancel()
	for {
		if _, err = gs.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "reconnect") {
		t.Fatalf("grpc ended with %v", err)
	}
	for {
		if _, _, err = wc.Read(sctx); err != nil {
			break
		}
	}
	if websocket.CloseStatus(err) != websocket.StatusServiceRestart {
		t.Fatalf("ws ended with %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestFlagsAndEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{"CHAT_HISTORY_SIZE": "7", "CHAT_GRPC_ADDR": ":1"}
	c, err := node.ParseConfig([]string{"-grpc-addr", ":2"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HistorySize != 7 || c.GRPCAddr != ":2" || c.HTTPAddr != ":8080" {
		t.Fatalf("got %+v", c)
	}
	var out strings.Builder
	if _, err := node.ParseConfig([]string{"-h"}, func(string) string { return "" }, &out); err == nil {
		t.Fatal("-h: want ErrHelp")
	}
	for _, f := range []string{"-grpc-addr", "-http-addr", "-redis-url", "-history-size", "CHAT_REDIS_URL"} {
		if !strings.Contains(out.String(), f) {
			t.Fatalf("usage lacks %s:\n%s", f, out.String())
		}
	}
}
