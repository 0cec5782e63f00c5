package main

import (
	"context"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/node"
)

// lockedBuffer collects output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitFor(t *testing.T, out *lockedBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
		time.Sleep(10 * time.Millisecond) // polling the client's output
	}
}

func TestTerminalClientAgainstANode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := make(chan node.Addrs, 1)
	nodeDone := make(chan error, 1)
	go func() {
		nodeDone <- node.Run(ctx, []string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0"}, func(string) string { return "" }, io.Discard, func(a node.Addrs) { addrs <- a })
	}()
	a := <-addrs

	// A second participant, over the client library directly.
	stdin, input := io.Pipe()
	out := &lockedBuffer{}
	cliDone := make(chan error, 1)
	go func() {
		cliDone <- run(ctx, []string{"-addr", a.GRPC, "-user", "alice", "-room", "tty"}, stdin, out, func(string) string { return "" })
	}()
	waitFor(t, out, "* live in #tty")

	other, err := client.Dial(client.Config{Addrs: []string{a.GRPC}, User: "bob", Room: "tty", NoHistory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	waitFor(t, out, "* bob joined")
	if err := other.WaitLive(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := other.SendMessage(ctx, &api.Message{Kind: api.Kind_KIND_TYPING}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "* bob is typing…")
	if _, err := other.Send(ctx, "hi alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "bob: hi alice")

	// What another user sends is shown inert: no escape sequence reaches
	// the terminal, and no line of it passes for someone else's.
	if _, err := other.Send(ctx, "pwn\x1b]0;title\x07\x1b[2J\u202e\n12:00:00 carol: fake\r\x1b[1Aover"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, `bob: pwn\x1b]0;title\x07\x1b[2J\u202e`)
	waitFor(t, out, contIndent+`12:00:00 carol: fake\r\x1b[1Aover`)
	checkInert(t, out.String())
	if regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d carol: `).MatchString(out.String()) {
		t.Fatalf("a line passes for carol's:\n%s", out.String())
	}

	io.WriteString(input, "hello bob\n")
	// Our own message shows as a message once stored.
	waitFor(t, out, "alice: hello bob")
	for m := range other.Messages() {
		if m.GetText() == "hello bob" && m.GetUser() == "alice" {
			break
		}
	}
	io.WriteString(input, "/who\n")
	waitFor(t, out, "* 2 here: alice, bob")
	io.WriteString(input, "/quit\n")
	if err := <-cliDone; err != nil {
		t.Fatal(err)
	}
	input.Close() // ends the client's stdin reader
	cancel()
	if err := <-nodeDone; err != nil {
		t.Fatal(err)
	}
}
