// Package seed_test checks the seed contract from the outside: a client
// compiled from the seed's exact proto (seedpb) talks to a real node binary,
// next to a WebSocket client sending the seed snippet's frame. It lives in
// its own binary so the seed's chat.Message never meets the product's in one
// protobuf registry.
package seed_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	seedpb "example.com/chat/test/seed/seedpb"
)

// startNode builds and runs cmd/node on loopback ports read from its log.
func startNode(t *testing.T) (grpcAddr, httpAddr string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "node")
	build := exec.Command("go", "build", "-o", bin, "example.com/chat/cmd/node")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build node: %v", err)
	}
	cmd := exec.Command(bin, "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	found := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var line struct{ Msg, GRPC, HTTP string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "node started" {
				found <- [2]string{line.GRPC, line.HTTP}
			}
		}
	}()
	select {
	case a := <-found:
		return a[0], a[1]
	case <-time.After(30 * time.Second):
		t.Fatal("node did not start")
		return "", ""
	}
}

func TestSeedClientInterop(t *testing.T) {
	grpcAddr, httpAddr := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := seedpb.NewChatClient(cc)

	// Two seed clients; the first message carries the user name.
	alice, err := client.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Send(&seedpb.Message{User: "alice", Ts: time.Now().UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	bob, err := client.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.Send(&seedpb.Message{User: "bob", Text: "hello alice", Ts: time.Now().UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	// alice joined first, so bob's first-message text reaches her live
	// (she may also see it as history if her join raced; either way it is
	// the first thing she receives, and nothing else: no events).
	m, err := alice.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.GetUser() != "bob" || m.GetText() != "hello alice" || m.GetTs() == 0 {
		t.Fatalf("alice got %v", m)
	}

	// The seed browser snippet's frame over WebSocket reaches both.
	wc, _, err := websocket.Dial(ctx, "ws://"+httpAddr+"/v1/chat/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.CloseNow()
	frame, _ := json.Marshal(map[string]any{"user": "web", "text": "hi", "ts": time.Now().UnixMilli()})
	if err := wc.Write(ctx, websocket.MessageText, frame); err != nil {
		t.Fatal(err)
	}
	for _, s := range []seedpb.Chat_StreamClient{alice, bob} {
		for {
			m, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if m.GetText() == "hello alice" {
				continue // bob's history replay of his own first message
			}
			if m.GetUser() != "web" || m.GetText() != "hi" {
				t.Fatalf("seed client got %v", m)
			}
			break
		}
	}

	// A seed client's message reaches the browser as JSON, and not the sender.
	if err := alice.Send(&seedpb.Message{User: "alice", Text: "hi web"}); err != nil {
		t.Fatal(err)
	}
	for {
		_, data, err := wc.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatalf("browser frame is not JSON: %s", data)
		}
		if got["text"] == "hello alice" {
			continue // history replayed on the browser's join
		}
		if got["text"] != "hi web" || got["user"] != "alice" {
			t.Fatalf("browser got %s", data)
		}
		break
	}
	if m, err := bob.Recv(); err != nil || m.GetText() != "hi web" {
		t.Fatalf("bob got %v %v", m, err)
	}
}
