// Package browser_test drives the chat page (pkg/web/static/index.html) in a
// headless Chromium against a node started in-process, with gRPC clients on
// the other side of the conversation.
//
// Chromium is required: the tests fail (never skip) when it is missing. It is
// found at $CHROME_PATH, or /usr/bin/chromium.
package browser_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/node"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait on the browser or on a gRPC stream.
const waitTimeout = 20 * time.Second

// ---- node ------------------------------------------------------------------

type testNode struct {
	node.Addrs
	stop func() // stops the node and waits for Run to return; idempotent
}

// startNode runs a node on the embedded memory backend. httpAddr is
// "127.0.0.1:0" for a fresh port, or a previous node's address to restart
// on it. The node stops at the end of the test at the latest.
func startNode(t *testing.T, httpAddr string, extra ...string) *testNode {
	t.Helper()
	logs := new(testutil.SyncBuffer)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan node.Addrs, 1)
	done := make(chan error, 1)
	args := append([]string{"-grpc-addr", "127.0.0.1:0", "-http-addr", httpAddr, "-shutdown-timeout", "5s", "-log-level", "debug"}, extra...)
	noEnv := func(string) string { return "" } // CHAT_* in the environment must not change the test
	go func() {
		done <- node.Run(ctx, args, noEnv, logs, func(a node.Addrs) { ready <- a })
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("node.Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("node did not stop within 30s")
			}
			if t.Failed() {
				t.Logf("node logs:\n%s", logs.String())
			}
		})
	}
	t.Cleanup(stop)
	select {
	case a := <-ready:
		return &testNode{Addrs: a, stop: stop}
	case err := <-done:
		t.Fatalf("node.Run returned before ready: %v\n%s", err, logs.String())
	case <-time.After(waitTimeout):
		t.Fatalf("node not ready within %v\n%s", waitTimeout, logs.String())
	}
	return nil
}

// ---- gRPC client -------------------------------------------------------------

type grpcUser struct {
	t       *testing.T
	name    string
	stream  api.Chat_StreamClient
	msgs    chan *api.Message
	done    chan struct{}  // closed when the receive loop ends
	backlog []*api.Message // received, not yet matched by a waitFor
}

// joinGRPC opens a stream as user in room. With events, it also waits for
// KIND_LIVE, so the join is complete when it returns.
func joinGRPC(t *testing.T, grpcAddr, user, room string, events bool) *grpcUser {
	t.Helper()
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := api.NewChatClient(cc).Stream(ctx)
	if err != nil {
		cancel()
		cc.Close()
		t.Fatalf("Stream: %v", err)
	}
	u := &grpcUser{t: t, name: user, stream: stream, msgs: make(chan *api.Message, 1024), done: make(chan struct{})}
	go func() {
		defer close(u.done)
		defer close(u.msgs)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			u.msgs <- m
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-u.done
		cc.Close()
	})
	first := &api.Message{User: user, Room: room}
	if events {
		first.Join = &api.Join{Events: true}
	}
	if err := stream.Send(first); err != nil {
		t.Fatalf("%s: send join: %v", user, err)
	}
	if events {
		u.waitFor("KIND_LIVE", func(m *api.Message) bool { return m.GetKind() == api.Kind_KIND_LIVE })
	}
	return u
}

func (u *grpcUser) send(m *api.Message) {
	u.t.Helper()
	if err := u.stream.Send(m); err != nil {
		u.t.Fatalf("%s: send: %v", u.name, err)
	}
}

// waitFor returns the first received message that matches. Messages that do
// not match stay in a backlog for later waits, so the order of waits need not
// be the order of arrival (events and stored messages take different paths).
func (u *grpcUser) waitFor(what string, match func(*api.Message) bool) *api.Message {
	u.t.Helper()
	for i, m := range u.backlog {
		if match(m) {
			u.backlog = append(u.backlog[:i], u.backlog[i+1:]...)
			return m
		}
	}
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-u.msgs:
			if !ok {
				u.t.Fatalf("%s: stream ended while waiting for %s (unmatched: %v)", u.name, what, u.backlog)
			}
			if match(m) {
				return m
			}
			u.backlog = append(u.backlog, m)
		case <-timer.C:
			u.t.Fatalf("%s: no %s within %v (unmatched: %v)", u.name, what, waitTimeout, u.backlog)
		}
	}
}

// ---- browser -----------------------------------------------------------------

func chromePath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("CHROME_PATH")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(p); err != nil {
		t.Fatalf("Chromium is required for the browser tests and was not found at %q (set CHROME_PATH, or install it: apt-get install chromium): %v", p, err)
	}
	return p
}

// newBrowser starts a headless Chromium with a fresh temporary profile
// (chromedp creates the user-data-dir and removes it) and returns its tab's
// context. The browser closes at the end of the test.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromePath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		// Timers of a hidden tab must not be throttled: the page's
		// reconnect backoff runs on them.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.WindowSize(1100, 720),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// Start the browser with a context that has no timeout: the first Run
	// binds the browser's life to its context.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium (%s): %v", chromePath(t), err)
	}
	return ctx
}

// typeInto types v into the first visible element sel matches, as
// chromedp.SendKeys does for a text input. SendKeys itself reads the
// node's attributes without the node's lock (chromedp v0.23.0,
// query.go), racing with the target's DOM event loop whenever the page
// changes an attribute of the field at that moment, which the race
// detector reports; focusing the node and sending the keys to the
// focused element reads no attributes.
func typeInto[S chromedp.Selectable](sel S, v string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(chromedp.Focus(sel, chromedp.NodeVisible), chromedp.KeyEvent(v))
}

// do runs actions with the wait bound.
func do(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// poll waits until the JavaScript expression is truthy.
func poll(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	if _, err := chromedp.Run(tctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(waitTimeout), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		status, _ := eval[string](ctx, `document.getElementById("status").textContent`)
		t.Fatalf("waiting for %s: %v (page status: %q)", what, err, status)
	}
}

func eval[T any](ctx context.Context, expr string) (T, error) {
	tctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	return chromedp.Run(tctx, chromedp.Evaluate[T](expr))
}

func mustEval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := eval[T](ctx, expr)
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// joinPage loads the page and joins room as user; it returns once the
// status says live.
func joinPage(t *testing.T, ctx context.Context, httpAddr, user, room string) {
	t.Helper()
	do(t, ctx, "load and join",
		chromedp.Navigate("http://"+httpAddr+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="name-input"]`)),
		chromedp.Clear(chromedp.CSS(`[data-testid="name-input"]`)),
		typeInto(chromedp.CSS(`[data-testid="name-input"]`), user),
		chromedp.Clear(chromedp.CSS(`[data-testid="room-input"]`)),
		typeInto(chromedp.CSS(`[data-testid="room-input"]`), room),
		chromedp.Click(chromedp.CSS(`[data-testid="join-button"]`)),
	)
	poll(t, ctx, "status live", `document.querySelector('[data-testid="status"]').dataset.state === "live"`)
}

// record keeps every state of the element with data-testid id, from now on,
// in window.__seen[id] ({state, text} objects): a state that lasts only a
// moment (a 4 s typing indicator on a loaded machine, a status between two
// retries) cannot slip between two polls.
func record(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	mustEval[chromedp.Void](t, ctx, fmt.Sprintf(`(() => {
		const id = %s, e = document.querySelector('[data-testid="' + id + '"]');
		window.__seen = window.__seen || {};
		const log = window.__seen[id] = [];
		const note = () => log.push({state: e.dataset.state || "", text: e.textContent});
		note();
		new MutationObserver(note).observe(e, {attributes: true, childList: true, subtree: true, characterData: true});
	})()`, jsString(id)))
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string { return strconv.Quote(s) }

// ---- tests ---------------------------------------------------------------------

// TestPageLiveChat: a browser user and a gRPC user talk in both directions,
// with join, typing and acknowledgement events.
func TestPageLiveChat(t *testing.T) {
	chromePath(t) // fail before starting anything when Chromium is missing
	n := startNode(t, "127.0.0.1:0")
	ctx := newBrowser(t) // closes before the node stops (cleanups run last-in first-out)

	joinPage(t, ctx, n.HTTP, "alice", "lobby")

	bob := joinGRPC(t, n.GRPC, "bob", "lobby", true)
	// The page saw bob join.
	poll(t, ctx, "bob in the online list", `!!document.querySelector('[data-testid="online-users"] [data-user="bob"]')`)

	// bob types: the page shows it.
	record(t, ctx, "typing-indicator")
	bob.send(&api.Message{Kind: api.Kind_KIND_TYPING})
	poll(t, ctx, "typing indicator", `window.__seen["typing-indicator"].some(s => s.text.includes("bob is typing"))`)

	// bob's message shows with user bob and a seq, and clears his typing.
	bob.send(&api.Message{Text: "hello from grpc", ClientId: "bob-1"})
	poll(t, ctx, "bob's message in the list", `[...document.querySelectorAll('[data-testid="message-list"] [data-user="bob"]')]
		.some(e => e.dataset.seq && e.querySelector(".text").textContent === "hello from grpc")`)
	poll(t, ctx, "typing indicator cleared", `document.querySelector('[data-testid="typing-indicator"]').textContent === ""`)

	// alice types and sends from the page.
	do(t, ctx, "type and send",
		typeInto(chromedp.CSS(`[data-testid="message-input"]`), "hello from browser"),
		chromedp.Click(chromedp.CSS(`[data-testid="send-button"]`)),
	)
	bob.waitFor("alice's typing event", func(m *api.Message) bool {
		return m.GetKind() == api.Kind_KIND_TYPING && m.GetUser() == "alice"
	})
	got := bob.waitFor("alice's message", func(m *api.Message) bool {
		return m.GetKind() == api.Kind_KIND_MESSAGE && m.GetText() == "hello from browser"
	})
	if got.GetUser() != "alice" || got.GetRoom() != "lobby" || got.GetSeq() == 0 || got.GetClientId() == "" {
		t.Errorf("bob got %v; want user alice in lobby with a seq and the page's clientId", got)
	}
	// The page confirmed its own message from the ack: same seq, not pending,
	// shown once.
	poll(t, ctx, "alice's message confirmed", fmt.Sprintf(`(() => {
		const own = [...document.querySelectorAll('[data-testid="message-list"] [data-user="alice"]')]
			.filter(e => e.querySelector(".text").textContent === "hello from browser");
		return own.length === 1 && own[0].dataset.seq === %s && !own[0].classList.contains("pending");
	})()`, jsString(strconv.FormatUint(got.GetSeq(), 10))))

	if v := mustEval[string](t, ctx, `document.querySelector('[data-testid="message-input"]').value`); v != "" {
		t.Errorf("message input not cleared after send: %q", v)
	}

	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile("/tmp/chat-page.png", shot, 0o644); err != nil {
		t.Logf("write screenshot: %v", err)
	}
}

// seedSnippet is the seed contract's browser snippet, verbatim.
const seedSnippet = `const ws = new WebSocket("ws://localhost:8080/v1/chat/stream");
ws.onmessage = e => console.log(JSON.parse(e.data));
ws.onopen = () => ws.send(JSON.stringify({user:"web", text:"hi", ts:Date.now()}));`

// TestSeedSnippet: the seed's plain WebSocket snippet works in a page served
// by the node, next to the page's own script.
func TestSeedSnippet(t *testing.T) {
	chromePath(t) // fail before starting anything when Chromium is missing
	n := startNode(t, "127.0.0.1:0")
	ctx := newBrowser(t) // closes before the node stops (cleanups run last-in first-out)

	// A seed-style gRPC client in the default room, joined first.
	g := joinGRPC(t, n.GRPC, "grpc", "general", true)

	// Subscribe before loading, so that no message is missed. The
	// subscription (and the loop below) ends with tctx.
	tctx, cancel := context.WithTimeout(ctx, 2*waitTimeout)
	defer cancel()
	console := chromedp.Console(tctx)
	do(t, ctx, "load page",
		chromedp.Navigate("http://"+n.HTTP+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="name-input"]`)),
		chromedp.Evaluate[chromedp.Void](strings.ReplaceAll(seedSnippet, "localhost:8080", n.HTTP)),
	)

	got := g.waitFor(`"hi" from web`, func(m *api.Message) bool {
		return m.GetKind() == api.Kind_KIND_MESSAGE && m.GetText() == "hi"
	})
	if got.GetUser() != "web" || got.GetRoom() != "general" {
		t.Errorf("got %v; want user web in general", got)
	}

	g.send(&api.Message{Text: "yo"})

	// The browser logs the parsed frame: an object with text "yo" from grpc.
	// Any uncaught exception (JSON.parse on a non-JSON frame) fails the test.
	var logged []string
	found := false
	for m, err := range console {
		if err != nil {
			t.Fatalf("no console log of \"yo\" within %v (logged: %q): %v", waitTimeout, logged, err)
		}
		if m.IsException() {
			t.Fatalf("page threw: %s", m.Text)
		}
		if m.Type != chromedp.ConsoleLog {
			continue
		}
		logged = append(logged, m.Text)
		if len(m.Args) == 1 && previewProp(m.Args[0], "text") == "yo" && previewProp(m.Args[0], "user") == "grpc" {
			found = true
			// JSON.parse gave ts (and seq) as numbers: new Date(m.ts) is
			// a date, not Invalid Date.
			for _, f := range []string{"ts", "seq"} {
				if typ := previewType(m.Args[0], f); typ != "number" {
					t.Errorf("the snippet's JSON.parse gave %s as a %s (%q), want a number", f, typ, previewProp(m.Args[0], f))
				}
			}
			if ts, err := strconv.ParseInt(previewProp(m.Args[0], "ts"), 10, 64); err != nil || time.Since(time.UnixMilli(ts)).Abs() > time.Hour {
				t.Errorf("ts %q is not a time in milliseconds near now", previewProp(m.Args[0], "ts"))
			}
			break
		}
	}
	if !found {
		t.Fatalf("no console log of {user: grpc, text: yo}; logged: %q", logged)
	}
}

// previewProp returns the preview value of property name of a logged object.
func previewProp(o *runtime.RemoteObject, name string) string {
	if o == nil || o.Type != "object" || o.Preview == nil {
		return ""
	}
	for _, p := range o.Preview.Properties {
		if p.Name == name {
			return p.Value
		}
	}
	return ""
}

// previewType returns the preview type ("number", "string", ...) of
// property name of a logged object.
func previewType(o *runtime.RemoteObject, name string) string {
	if o == nil || o.Preview == nil {
		return ""
	}
	for _, p := range o.Preview.Properties {
		if p.Name == name {
			return string(p.Type)
		}
	}
	return ""
}

// TestPageHistory: messages sent before the page joins show as history, in
// order, and new ones follow live.
func TestPageHistory(t *testing.T) {
	chromePath(t) // fail before starting anything when Chromium is missing
	n := startNode(t, "127.0.0.1:0")
	ctx := newBrowser(t) // closes before the node stops (cleanups run last-in first-out)

	carol := joinGRPC(t, n.GRPC, "carol", "history", true)
	texts := []string{"first", "second", "third <b>not bold</b>"}
	var seqs []uint64
	for i, text := range texts {
		id := "carol-" + strconv.Itoa(i)
		carol.send(&api.Message{Text: text, ClientId: id})
		ack := carol.waitFor("ack "+id, func(m *api.Message) bool {
			return m.GetKind() == api.Kind_KIND_ACK && m.GetClientId() == id
		})
		seqs = append(seqs, ack.GetSeq())
	}

	joinPage(t, ctx, n.HTTP, "dave", "history")
	// carol was there before the page came: only the presence route can
	// tell it so.
	poll(t, ctx, "carol in the online list (presence)", `!!document.querySelector('[data-testid="online-users"] [data-user="carol"]')`)

	type row struct {
		Seq  string `json:"seq"`
		User string `json:"user"`
		Text string `json:"text"`
	}
	rows := mustEval[[]row](t, ctx, `[...document.querySelectorAll('[data-testid="message-list"] [data-seq]')]
		.map(e => ({seq: e.dataset.seq, user: e.dataset.user, text: e.querySelector(".text").textContent}))`)
	if len(rows) != len(texts) {
		t.Fatalf("history shows %d messages, want %d: %+v", len(rows), len(texts), rows)
	}
	for i, r := range rows {
		if r.Text != texts[i] || r.User != "carol" || r.Seq != strconv.FormatUint(seqs[i], 10) {
			t.Errorf("history[%d] = %+v; want carol %q seq %d", i, r, texts[i], seqs[i])
		}
	}
	// User text is text, never markup.
	if n := mustEval[int](t, ctx, `document.querySelectorAll('[data-testid="message-list"] b').length`); n != 0 {
		t.Errorf("user text was rendered as HTML: %d <b> elements", n)
	}
}

// TestPagePackedFrames: the page offers chat.v1.ndjson, the node selects
// it, and a join's replay, which the node writes as one batch, arrives
// several messages to a frame; the page shows every one, in order.
func TestPagePackedFrames(t *testing.T) {
	chromePath(t)
	n := startNode(t, "127.0.0.1:0")
	ctx := newBrowser(t)

	carol := joinGRPC(t, n.GRPC, "carol", "packed", true)
	const count = 40
	var texts []string
	for i := range count {
		id := "carol-" + strconv.Itoa(i)
		texts = append(texts, "packed message "+strconv.Itoa(i))
		carol.send(&api.Message{Text: texts[i], ClientId: id})
		carol.waitFor("ack "+id, func(m *api.Message) bool {
			return m.GetKind() == api.Kind_KIND_ACK && m.GetClientId() == id
		})
	}

	do(t, ctx, "spy on the page's sockets", spyOnSockets())
	joinPage(t, ctx, n.HTTP, "dave", "packed")
	poll(t, ctx, "the whole replay shown", fmt.Sprintf(`document.querySelectorAll('[data-testid="message-list"] [data-seq]').length >= %d`, count))
	if p := mustEval[string](t, ctx, `String(window.__ws.protocols[0])`); p != "chat.v1.ndjson" {
		t.Fatalf("the page's socket runs subprotocol %q, want chat.v1.ndjson", p)
	}
	if most := mustEval[int](t, ctx, `Math.max(0, ...window.__ws.received[0])`); most < 2 {
		t.Errorf("no frame held more than %d message(s): the replay was not packed", most)
	}
	shown := mustEval[[]string](t, ctx, `[...document.querySelectorAll('[data-testid="message-list"] [data-seq] .text')].map(e => e.textContent)`)
	if !slices.Equal(shown, texts) {
		t.Errorf("the page shows %q, want %q", shown, texts)
	}
}

// TestPageReconnect: when the node restarts, the page shows that it is
// reconnecting with the close reason, comes back by itself, resumes (here
// the memory backend lost the history, so it gets a truncation notice), and
// chats again.
func TestPageReconnect(t *testing.T) {
	chromePath(t) // fail before starting anything when Chromium is missing
	n := startNode(t, "127.0.0.1:0")
	ctx := newBrowser(t) // closes before the node stops (cleanups run last-in first-out)

	joinPage(t, ctx, n.HTTP, "erin", "ops")
	frank := joinGRPC(t, n.GRPC, "frank", "ops", true)
	frank.send(&api.Message{Text: "before restart"})
	poll(t, ctx, "message before restart", `[...document.querySelectorAll('[data-testid="message-list"] [data-user="frank"]')]
		.some(e => e.querySelector(".text").textContent === "before restart")`)

	// The status can move on quickly (a retry against the stopping node,
	// say): record every one the page shows.
	record(t, ctx, "status")
	n.stop() // graceful: the page gets close code 1012
	// A routine restart is calm: "reconnecting…" saying the server is
	// restarting, no alarm in the conversation, the online list greyed.
	poll(t, ctx, "reconnecting status saying the server restarts",
		`window.__seen["status"].some(s => s.state === "reconnecting" && s.text.includes("reconnecting…") && s.text.includes("restarting"))`)
	poll(t, ctx, "online list greyed out", `document.querySelector('[data-testid="online-users"]').dataset.stale === ""`)
	if alarms := mustEval[[]string](t, ctx, `[...document.querySelectorAll('[data-testid="event"].error')].map(e => e.textContent)`); len(alarms) != 0 {
		t.Errorf("a routine restart showed alarms: %q", alarms)
	}
	if bad := mustEval[[]string](t, ctx, `window.__seen["status"].filter(s => /shutting down|1012/.test(s.text)).map(s => s.text)`); len(bad) != 0 {
		t.Errorf("the status showed the shutdown alarm or a bare close code: %q", bad)
	}

	n2 := startNode(t, n.HTTP) // same address: the page reconnects to it
	poll(t, ctx, "live again", `document.querySelector('[data-testid="status"]').dataset.state === "live"`)
	poll(t, ctx, "online list current again", `document.querySelector('[data-testid="online-users"]').dataset.stale === undefined`)
	poll(t, ctx, "truncation notice", `!!document.querySelector('[data-testid="message-list"] [data-kind="truncated"]')`)

	frank2 := joinGRPC(t, n2.GRPC, "frank", "ops", true)
	frank2.send(&api.Message{Text: "after restart"})
	poll(t, ctx, "message after restart", `[...document.querySelectorAll('[data-testid="message-list"] [data-user="frank"]')]
		.some(e => e.querySelector(".text").textContent === "after restart")`)
	// The earlier message is still on screen, once.
	if c := mustEval[int](t, ctx, `[...document.querySelectorAll('[data-testid="message-list"] [data-user="frank"]')]
		.filter(e => e.querySelector(".text").textContent === "before restart").length`); c != 1 {
		t.Errorf("message before restart shown %d times, want 1", c)
	}
	do(t, ctx, "send after restart",
		typeInto(chromedp.CSS(`[data-testid="message-input"]`), "erin is back"),
		chromedp.Click(chromedp.CSS(`[data-testid="send-button"]`)),
	)
	frank2.waitFor("erin's message", func(m *api.Message) bool {
		return m.GetKind() == api.Kind_KIND_MESSAGE && m.GetText() == "erin is back" && m.GetUser() == "erin"
	})
}

// waitTokenProbe waits until the page has asked the node whether it
// requires a token and marked the token field so (aria-required). Typing
// into that field while the answer changes its attributes races inside
// chromedp (SendKeys reads the node's attributes without its lock, seen
// under -race), so tests that type a token wait for this first.
func waitTokenProbe(t *testing.T, ctx context.Context) {
	t.Helper()
	poll(t, ctx, "the token probe answered", `document.querySelector('[data-testid="token-input"]').getAttribute("aria-required") === "true"`)
}

// TestPageWithToken: against a node that requires JWTs, the page carries
// the token given in its form (as a WebSocket subprotocol, never in the
// URL), joins as the token's user, and its message is stored under that
// name.
func TestPageWithToken(t *testing.T) {
	chromePath(t)
	secret := "0123456789abcdef0123456789abcdef"
	n := startNode(t, "127.0.0.1:0", "-jwt-secret", secret)
	ctx := newBrowser(t)
	tok, err := auth.Mint([]byte(secret), "alice", nil, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	do(t, ctx, "load",
		chromedp.Navigate("http://"+n.HTTP+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="name-input"]`)),
	)
	waitTokenProbe(t, ctx)
	do(t, ctx, "fill the token and join",
		chromedp.Clear(chromedp.CSS(`[data-testid="name-input"]`)),
		typeInto(chromedp.CSS(`[data-testid="name-input"]`), "alice"),
		chromedp.Clear(chromedp.CSS(`[data-testid="room-input"]`)),
		typeInto(chromedp.CSS(`[data-testid="room-input"]`), "secure"),
		typeInto(chromedp.CSS(`[data-testid="token-input"]`), tok),
		chromedp.Click(chromedp.CSS(`[data-testid="join-button"]`)),
	)
	poll(t, ctx, "status live with a token", `document.querySelector('[data-testid="status"]').dataset.state === "live"`)
	do(t, ctx, "send",
		typeInto(chromedp.CSS(`[data-testid="message-input"]`), "signed hello"),
		chromedp.Click(chromedp.CSS(`[data-testid="send-button"]`)),
	)
	poll(t, ctx, "own message confirmed", `!!document.querySelector('[data-testid="message-list"] [data-user="alice"][data-seq]')`)

	req, _ := http.NewRequest(http.MethodGet, "http://"+n.HTTP+"/v1/rooms/secure/messages", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"user":"alice"`) || !strings.Contains(string(body), "signed hello") {
		t.Fatalf("history: %d %s", resp.StatusCode, body)
	}
}
