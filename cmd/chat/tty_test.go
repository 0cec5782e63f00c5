package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/client"
)

// The terminal tests run the real command (this test binary, as main: see
// TestMain) in a tmux pane, a real pseudo-terminal with a real terminal
// emulator: what capture-pane returns is what a person would see.

const ttySecret = "0123456789abcdef0123456789abcdef"

// pane is the chat command running in a tmux pane of its own tmux server.
type pane struct {
	t    *testing.T
	sock string
}

func tmuxPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("tmux")
	if err != nil {
		t.Fatalf("tmux is required for the terminal tests (apt-get install tmux): %v", err)
	}
	return p
}

// startPane runs the chat command with args in a 100×30 pane, with env
// (KEY=VALUE) on top of a clean USER and CHAT_TOKEN.
func startPane(t *testing.T, env []string, args ...string) *pane {
	t.Helper()
	tmux := tmuxPath(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	p := &pane{t: t, sock: "chat-tty-" + hex.EncodeToString(b[:])}
	conf := filepath.Join(t.TempDir(), "tmux.conf")
	// remain-on-exit keeps the pane (its screen and exit status) after
	// the command ends; no status bar, so the pane is the whole screen.
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\nset -g status off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmdline := []string{shellQuote(os.Args[0])}
	for _, a := range args {
		cmdline = append(cmdline, shellQuote(a))
	}
	// The shell prints the exit status once the command ends.
	cmdline = append(cmdline, `; echo "[exit $?]"`)
	tmuxArgs := []string{"-L", p.sock, "-f", conf, "new-session", "-d", "-x", "100", "-y", "30",
		"-e", "CHAT_TEST_MAIN=1", "-e", "USER=", "-e", "CHAT_TOKEN="}
	for _, e := range env {
		tmuxArgs = append(tmuxArgs, "-e", e)
	}
	tmuxArgs = append(tmuxArgs, strings.Join(cmdline, " "))
	if out, err := exec.Command(tmux, tmuxArgs...).CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("screen at the end:\n%s", p.screen())
		}
		_ = exec.Command(tmux, "-L", p.sock, "kill-server").Run()
	})
	return p
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (p *pane) tmux(args ...string) string {
	p.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", p.sock}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// screen is what the pane shows, with what scrolled off it, wrapped lines
// joined and trailing blank lines dropped.
func (p *pane) screen() string {
	out, err := exec.Command("tmux", "-L", p.sock, "capture-pane", "-p", "-J", "-S", "-", "-t", "0").CombinedOutput()
	if err != nil {
		return "(capture-pane: " + err.Error() + ")"
	}
	return strings.TrimRight(string(out), "\n ")
}

// lastLine is the screen's last non-blank line: where the input is.
func (p *pane) lastLine() string {
	lines := strings.Split(p.screen(), "\n")
	return strings.TrimRight(lines[len(lines)-1], " ")
}

// typeText types s, without Enter.
func (p *pane) typeText(s string) { p.tmux("send-keys", "-t", "0", "-l", "--", s) }

// enter types s and Enter.
func (p *pane) enter(s string) {
	p.typeText(s)
	p.tmux("send-keys", "-t", "0", "Enter")
}

// wait polls the screen until pred holds.
func (p *pane) wait(what string, pred func(screen string) bool) string {
	p.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := p.screen()
		if pred(s) {
			return s
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("screen never showed %s:\n%s", what, s)
		}
		time.Sleep(50 * time.Millisecond) // polling the terminal
	}
}

func (p *pane) waitText(want string) string {
	p.t.Helper()
	return p.wait(strconv.Quote(want), func(s string) bool { return strings.Contains(s, want) })
}

// exitStatus waits for the command to end and returns its exit status.
func (p *pane) exitStatus() int {
	p.t.Helper()
	re := regexp.MustCompile(`(?m)^\[exit (\d+)\]`)
	m := re.FindStringSubmatch(p.wait("the command's end", re.MatchString))
	n, _ := strconv.Atoi(m[1])
	return n
}

// observer is a gRPC participant on the other side.
func observer(t *testing.T, addr, user, room, token string) *client.Client {
	t.Helper()
	c, err := client.Dial(client.Config{Addrs: []string{addr}, User: user, Room: room, Token: token, NoHistory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.WaitLive(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// nextText returns the next chat message c receives.
func nextText(t *testing.T, c *client.Client) *api.Message {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				t.Fatal("observer closed")
			}
			if m.GetKind() == api.Kind_KIND_MESSAGE {
				return m
			}
		case <-timeout:
			t.Fatal("observer got no message")
		}
	}
}

var msgLine = func(user, text string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d ` + regexp.QuoteMeta(user) + `: ` + regexp.QuoteMeta(text) + `$`)
}

// TestTTYHelpUnknownCommandAndTyping: /help lists the commands, an unknown
// command is refused locally (never sent), a message arriving while a
// line is half typed is printed above it and leaves it intact, the user's
// own message shows as a message, /who answers, /quit exits 0.
func TestTTYHelpUnknownCommandAndTyping(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t)
	bob := observer(t, a.GRPC, "bob", "tty", "")
	p := startPane(t, nil, "-addr", a.GRPC, "-user", "alice", "-room", "tty")
	p.waitText("* live in #tty on " + a.GRPC)
	p.wait("the live prompt", func(string) bool { return p.lastLine() == "alice@tty>" })

	p.enter("/help")
	for _, c := range []string{"/help", "/join ROOM", "/leave [ROOM]", "/dm USER", "/rooms", "/who", "/typing", "/quit", "//text"} {
		p.waitText(c)
	}
	p.enter("/frobnicate now")
	p.waitText("! unknown command /frobnicate (not sent)")

	p.typeText("half a line")
	p.wait("the typed text on the input line", func(string) bool { return p.lastLine() == "alice@tty> half a line" })
	ctx := context.Background()
	if _, err := bob.Send(ctx, "interrupting you"); err != nil {
		t.Fatal(err)
	}
	s := p.wait("bob's message on a line of its own", func(s string) bool { return msgLine("bob", "interrupting you").MatchString(s) })
	if last := p.lastLine(); last != "alice@tty> half a line" {
		t.Fatalf("the input line is %q after a message arrived, want it intact:\n%s", last, s)
	}
	p.enter(", finished")
	// The first message bob gets from alice is this one: /frobnicate
	// was never sent.
	if m := nextText(t, bob); m.GetUser() != "alice" || m.GetText() != "half a line, finished" {
		t.Fatalf("bob got %q from %s, want alice's typed line", m.GetText(), m.GetUser())
	}
	p.wait("alice's own message shown as a message", func(s string) bool { return msgLine("alice", "half a line, finished").MatchString(s) })

	p.enter("/who")
	p.waitText("* 2 here: alice, bob")
	p.enter("/quit")
	if st := p.exitStatus(); st != 0 {
		t.Fatalf("/quit exited %d", st)
	}
}

// TestTTYTokenUser: with -token and no -user (and $USER someone else), the
// user is the token's subject.
func TestTTYTokenUser(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t, "-jwt-secret", ttySecret)
	mint := func(user string) string {
		tok, err := auth.Mint([]byte(ttySecret), user, nil, time.Hour, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	dave := observer(t, a.GRPC, "dave", "general", mint("dave"))
	p := startPane(t, []string{"USER=notcarol"}, "-addr", a.GRPC, "-token", mint("carol"))
	p.waitText("* joining #general as carol")
	p.waitText("* live in #general")
	p.enter("signed by carol")
	if m := nextText(t, dave); m.GetUser() != "carol" || m.GetText() != "signed by carol" {
		t.Fatalf("dave got %q from %q", m.GetText(), m.GetUser())
	}
	p.wait("carol's own message", func(s string) bool { return msgLine("carol", "signed by carol").MatchString(s) })
}

// TestTTYUnreachableNode: a node that is not there is reported at the first
// failed attempt, in words, once; the state line then counts the retries.
func TestTTYUnreachableNode(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := startPane(t, nil, "-addr", dead, "-user", "erin")
	p.waitText("! cannot connect to " + dead + ": connection refused (is the node running")
	s := p.wait("the state line counting retries", func(string) bool {
		return regexp.MustCompile(`^\[reconnecting: [3-9] tries failed, next in [0-9.]+m?s\] erin@general>$`).MatchString(p.lastLine())
	})
	if n := strings.Count(s, "cannot connect"); n != 1 {
		t.Fatalf("the failure was printed %d times, want once (then the state line):\n%s", n, s)
	}
	p.enter("/quit")
	if st := p.exitStatus(); st != 0 {
		t.Fatalf("/quit exited %d", st)
	}
}

// TestTTYPermanentErrors: an expired token, a token for another user, and
// a room the token may not join stop the command with a non-zero exit and
// a sentence saying why, instead of retrying forever.
func TestTTYPermanentErrors(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t, "-jwt-secret", ttySecret)
	expired, err := auth.Mint([]byte(ttySecret), "frank", nil, time.Millisecond, "", "")
	if err != nil {
		t.Fatal(err)
	}
	roomsOnly, err := auth.Mint([]byte(ttySecret), "frank", []string{"general"}, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := auth.Mint([]byte("another-secret-of-32-bytes-or-more!!"), "frank", nil, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // exp is in whole seconds
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"expired token", []string{"-token", expired}, "the token expired at"},
		{"another user's token", []string{"-token", roomsOnly, "-user", "grace"}, `the token is for user "frank", not "grace"`},
		{"forbidden room", []string{"-token", roomsOnly, "-room", "secret"}, `not allowed: this token may not join room "secret"`},
		{"garbage token", []string{"-token", "a.b.c"}, "the token's claims are not"},
		{"token signed with another key", []string{"-token", otherKey}, "the node refused the token"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := startPane(t, nil, append([]string{"-addr", a.GRPC}, c.args...)...)
			if st := p.exitStatus(); st == 0 {
				t.Fatalf("exit status 0, want non-zero:\n%s", p.screen())
			}
			if s := p.screen(); !strings.Contains(s, c.want) {
				t.Fatalf("the screen does not say %q:\n%s", c.want, s)
			}
		})
	}
}

// TestTTYWhoUsesTheConnectedNode: with a dead first address, /who asks the
// node the client is live on (it used to dial the first address).
func TestTTYWhoUsesTheConnectedNode(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	a := testutil.StartNode(t)
	p := startPane(t, nil, "-addr", dead+","+a.GRPC, "-user", "henry", "-room", "who")
	p.waitText("* live in #who on " + a.GRPC)
	p.enter("/who")
	p.waitText("* 1 here: henry")
}
