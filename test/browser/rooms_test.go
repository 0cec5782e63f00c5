package browser_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/auth"
)

// Many conversations on one WebSocket (issue 14): the room list, direct
// messages started by user name, invitations on the personal channel,
// unread dots from the sequence ids, switching rooms without a reconnect,
// and a reconnect that resumes every room from its own point in one join.

// wsSpy runs in the page before its own script (test-side: the page
// patches nothing): it records the URL of every WebSocket the page opens
// and every frame it sends, in window.__ws; and, per socket, the
// subprotocol the server selected and the number of newline-separated
// parts of every text frame it received (received[i] for opened[i]).
const wsSpy = `(() => {
	const opened = [], sent = [], protocols = [], received = [];
	window.__ws = { opened, sent, protocols, received };
	window.WebSocket = new Proxy(window.WebSocket, {
		construct(target, args) {
			const s = Reflect.construct(target, args);
			const i = opened.length;
			opened.push(String(args[0]));
			protocols.push(null);
			received.push([]);
			s.addEventListener("open", () => { protocols[i] = s.protocol; });
			s.addEventListener("message", e => {
				if (typeof e.data === "string") received[i].push(e.data.split("\n").length);
			});
			const send = s.send.bind(s);
			s.send = d => { sent.push(String(d)); return send(d); };
			return s;
		},
	});
})()`

func spyOnSockets() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: wsSpy})
		return err
	})
}

// newTab opens a tab in a browser context of its own (its own storage and
// cookies: another user) in the browser of ctx. It closes at the end of
// the test, before the browser.
func newTab(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	return tab
}

// postJSON posts body to url and decodes the answer, which must be 200.
func postJSON(t *testing.T, url, body string) map[string]any {
	t.Helper()
	return postAs(t, "", url, body)
}

// postAs is postJSON with a bearer token ("" for none).
func postAs(t *testing.T, token, url, body string) map[string]any {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s %s: %d %s", url, body, resp.StatusCode, b)
	}
	var out map[string]any
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&out); err != nil {
		t.Fatalf("POST %s: %v: %s", url, err, b)
	}
	return out
}

// metric returns the sum of the values of the node's metric name whose
// labels contain labels ("" for any).
func metric(t *testing.T, httpAddr, name, labels string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? (\S+)$`)
	sum := 0.0
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		if !strings.Contains(m[1], labels) {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("metric %s: %q: %v", name, m[0], err)
		}
		sum += v
	}
	return sum
}

const roomList = `[data-testid="room-list"]`

func itemSel(room string) string { return roomList + ` [data-room=` + jsString(room) + `]` }

// clickRoom shows room from the room list.
func clickRoom(t *testing.T, ctx context.Context, room string) {
	t.Helper()
	do(t, ctx, "open "+room, chromedp.Click(chromedp.CSS(itemSel(room)+` .open`)))
	poll(t, ctx, room+" shown", `document.querySelector('[data-testid="message-list"]').dataset.room === `+jsString(room))
}

// texts returns the texts of the chat messages in room's list, shown or not.
func texts(t *testing.T, ctx context.Context, room string) []string {
	t.Helper()
	return mustEval[[]string](t, ctx, `[...document.querySelectorAll('.messages[data-room=`+jsString(room)+`] .msg .text')].map(e => e.textContent)`)
}

// hasText is a JavaScript condition: room's list shows text.
func hasText(room, text string) string {
	return `[...document.querySelectorAll('.messages[data-room=` + jsString(room) + `] .msg .text')].some(e => e.textContent === ` + jsString(text) + `)`
}

func unreadJS(room string) string {
	return `(document.querySelector(` + jsString(itemSel(room)) + `)?.dataset.unread === "")`
}

func typeAndSend(t *testing.T, ctx context.Context, text string) {
	t.Helper()
	do(t, ctx, "send "+text,
		typeInto(chromedp.CSS(`[data-testid="message-input"]`), text),
		chromedp.Click(chromedp.CSS(`[data-testid="send-button"]`)),
	)
}

// sentFrames returns the frames the page sent (see wsSpy), decoded.
type sentFrame struct {
	User string `json:"user"`
	Room string `json:"room"`
	Kind string `json:"kind"`
	Text string `json:"text"`
	Join *struct {
		Events   bool   `json:"events"`
		Personal bool   `json:"personal"`
		AfterSeq string `json:"afterSeq"`
		Epoch    string `json:"epoch"`
		Rooms    []struct {
			Room     string `json:"room"`
			AfterSeq string `json:"afterSeq"`
			Epoch    string `json:"epoch"`
		} `json:"rooms"`
	} `json:"join"`
}

func sentFrames(t *testing.T, ctx context.Context) []sentFrame {
	t.Helper()
	raw := mustEval[[]string](t, ctx, `window.__ws.sent`)
	out := make([]sentFrame, len(raw))
	for i, s := range raw {
		if err := json.Unmarshal([]byte(s), &out[i]); err != nil {
			t.Fatalf("the page sent %q: %v", s, err)
		}
	}
	return out
}

// TestPageRoomsAndDirect: two users on two nodes sharing a real Redis.
// alice finds the direct conversation carol started while she was away
// in her list, unread; she starts one with bob by name, and bob sees it
// appear through his personal channel, unread, named after alice; they
// talk; alice switches between general, random and the two direct
// conversations and back on one WebSocket (the page opened one, the node
// saw no disconnect), and every message lands in its own room only, with
// a dot on the rooms not shown; closing random unsubscribes on the same
// socket. Screenshots at 1280x800 and 375x667 (and the phone with its
// forms unfolded), with the layout checks of TestPageLayout.
func TestPageRoomsAndDirect(t *testing.T) {
	chromePath(t)
	rd := testutil.StartRedis(t)
	redisURL := "redis://" + rd.Addr() + "/0"
	na := startNode(t, "127.0.0.1:0", "-redis-url", redisURL, "-node-id", "na")
	nb := startNode(t, "127.0.0.1:0", "-redis-url", redisURL, "-node-id", "nb")

	// carol writes to alice, who is not connected.
	carolDM, _ := postJSON(t, "http://"+nb.HTTP+"/v1/direct", `{"user":"carol","peer":"alice"}`)["room"].(string)
	if !strings.HasPrefix(carolDM, "dm.") {
		t.Fatalf("POST /v1/direct gave room %q", carolDM)
	}
	postJSON(t, "http://"+nb.HTTP+"/v1/rooms/"+carolDM+"/messages", `{"user":"carol","text":"while you were away"}`)

	a := newBrowser(t)
	b := newTab(t, a)
	do(t, a, "spy on alice's sockets", spyOnSockets(), chromedp.EmulateViewport(1280, 800, chromedp.EmulateScale(1)))
	do(t, b, "spy on bob's sockets", spyOnSockets())
	joinPage(t, a, na.HTTP, "alice", "general")
	joinPage(t, b, nb.HTTP, "bob", "general")
	gus := joinGRPC(t, nb.GRPC, "gus", "general", true)

	// The conversations call put carol's message in alice's list, unread,
	// under carol's name.
	poll(t, a, "carol's conversation in alice's list, unread", unreadJS(carolDM)+` &&
		document.querySelector(`+jsString(itemSel(carolDM))+`).textContent.includes("carol")`)

	// alice joins random from the list's form: it is shown.
	do(t, a, "join random",
		typeInto(chromedp.CSS(`[data-testid="new-room-input"]`), "random"),
		chromedp.Click(chromedp.CSS(`[data-testid="room-join-button"]`)),
	)
	poll(t, a, "random shown and live", `document.querySelector('[data-testid="message-list"]').dataset.room === "random" &&
		document.querySelector(`+jsString(itemSel("random"))+`).dataset.state === "live"`)

	// alice starts a direct conversation with bob by name.
	do(t, a, "message bob",
		typeInto(chromedp.CSS(`[data-testid="dm-input"]`), "bob"),
		chromedp.Click(chromedp.CSS(`[data-testid="dm-button"]`)),
	)
	poll(t, a, "the conversation with bob shown", `document.querySelector('[data-testid="message-list"]').dataset.room.startsWith("dm.") &&
		document.querySelector('[data-testid="room-title"]').textContent.startsWith("@bob")`)
	dm := mustEval[string](t, a, `document.querySelector('[data-testid="message-list"]').dataset.room`)
	if want, _ := postJSON(t, "http://"+na.HTTP+"/v1/direct", `{"user":"bob","peer":"alice"}`)["room"].(string); dm != want || dm == carolDM {
		t.Fatalf("the page opened %q; the direct conversation of alice and bob is %q (carol's %q)", dm, want, carolDM)
	}

	// bob's personal channel brings it, unread, named after alice.
	poll(t, b, "the conversation with alice in bob's list, unread", unreadJS(dm))
	bobItem := mustEval[string](t, b, `document.querySelector(`+jsString(itemSel(dm))+`).textContent`)
	if !strings.Contains(bobItem, "alice") || strings.Contains(bobItem, "dm.") {
		t.Errorf("bob's list shows the conversation as %q; want alice's name, not its id", bobItem)
	}

	// They talk. bob gets alice's message in the conversation while he
	// looks at general: it stays unread until he opens it.
	poll(t, a, "the conversation live on alice's side", `document.querySelector(`+jsString(itemSel(dm))+`).dataset.state === "live"`)
	typeAndSend(t, a, "hi bob")
	poll(t, b, "alice's message in bob's conversation", hasText(dm, "hi bob"))
	if !mustEval[bool](t, b, unreadJS(dm)) {
		t.Errorf("bob's conversation with alice is not unread after her message")
	}
	clickRoom(t, b, dm)
	poll(t, b, "no dot once opened", `!`+unreadJS(dm))
	typeAndSend(t, b, "hi alice")
	poll(t, a, "bob's answer in alice's conversation", hasText(dm, "hi alice"))

	// alice switches rooms; messages land in their own room, and the rooms
	// not shown get a dot.
	clickRoom(t, a, "general")
	gus.send(&api.Message{Text: "in general"})
	poll(t, a, "gus's message in general", hasText("general", "in general"))
	clickRoom(t, a, "random")
	typeAndSend(t, b, "are you there?")
	poll(t, a, "a dot on the conversation with bob", unreadJS(dm)+` && `+hasText(dm, "are you there?"))
	gus.send(&api.Message{Text: "general again"})
	poll(t, a, "a dot on general", unreadJS("general")+` && `+hasText("general", "general again"))
	if mustEval[bool](t, a, unreadJS("random")) {
		t.Errorf("random, shown, has a dot")
	}
	clickRoom(t, a, dm)
	poll(t, a, "no dot on the conversation once shown", `!`+unreadJS(dm))
	typeAndSend(t, a, "yes")
	poll(t, b, "alice's yes", hasText(dm, "yes"))
	clickRoom(t, a, carolDM)
	poll(t, a, "carol's message shown, no dot", hasText(carolDM, "while you were away")+` && !`+unreadJS(carolDM))
	clickRoom(t, a, "random")
	typeAndSend(t, a, "random talk")
	poll(t, a, "random talk confirmed", `!!document.querySelector('.messages[data-room="random"] .msg[data-seq]')`)
	clickRoom(t, a, "general")
	poll(t, a, "no dot on general once shown", `!`+unreadJS("general"))

	for _, c := range []struct {
		who  string
		ctx  context.Context
		room string
		want []string
	}{
		{"alice", a, "general", []string{"in general", "general again"}},
		{"alice", a, "random", []string{"random talk"}},
		{"alice", a, dm, []string{"hi bob", "hi alice", "are you there?", "yes"}},
		{"alice", a, carolDM, []string{"while you were away"}},
		{"bob", b, "general", []string{"in general", "general again"}},
		{"bob", b, dm, []string{"hi bob", "hi alice", "are you there?", "yes"}},
	} {
		if got := texts(t, c.ctx, c.room); !slices.Equal(got, c.want) {
			t.Errorf("%s's %s shows %q, want %q", c.who, c.room, got, c.want)
		}
	}
	if got := texts(t, b, "random"); len(got) != 0 {
		t.Errorf("bob, who never joined random, shows %q", got)
	}

	// alice closes random: it leaves the list, on the same socket.
	do(t, a, "close random", chromedp.Evaluate[chromedp.Void](`document.querySelector(`+jsString(itemSel("random")+` .close`)+`).click()`))
	poll(t, a, "random gone", `!document.querySelector(`+jsString(itemSel("random"))+`) && !document.querySelector('.messages[data-room="random"]')`)

	// One WebSocket each, all along: the page opened one, the node saw no
	// stream end, and the rooms came as subscriptions on it.
	for _, u := range []struct {
		who string
		ctx context.Context
	}{{"alice", a}, {"bob", b}} {
		if n := mustEval[int](t, u.ctx, `window.__ws.opened.length`); n != 1 {
			t.Errorf("%s's page opened %d WebSockets, want 1", u.who, n)
		}
	}
	if d := metric(t, na.HTTP, "chat_hub_disconnects_total", ""); d != 0 {
		t.Errorf("alice's node counted %v stream ends", d)
	}
	if s := metric(t, na.HTTP, "chat_hub_sessions", `transport="ws"`); s != 1 {
		t.Errorf("alice's node has %v WebSocket sessions, want 1", s)
	}
	var joins int
	subscribed, unsubscribed := map[string]bool{}, map[string]bool{}
	for _, f := range sentFrames(t, a) {
		if f.Join != nil && f.Kind == "" && f.User != "" {
			joins++
			if f.Room != "general" || !f.Join.Events || !f.Join.Personal {
				t.Errorf("alice's join in %q has %+v; want general with events and the personal channel", f.Room, *f.Join)
			}
		}
		switch f.Kind {
		case "KIND_SUBSCRIBE":
			subscribed[f.Room] = true
		case "KIND_UNSUBSCRIBE":
			unsubscribed[f.Room] = true
		}
		if f.Kind == "" && f.Join == nil && f.Text != "" && f.Room == "" {
			t.Errorf("alice sent %q without naming its room", f.Text)
		}
	}
	if joins != 1 || !subscribed["random"] || !subscribed[dm] || !subscribed[carolDM] {
		t.Errorf("alice sent %d joins and subscribed to %v; want one join, then random, %s and %s subscribed", joins, subscribed, dm, carolDM)
	}
	if len(unsubscribed) != 1 || !unsubscribed["random"] {
		t.Errorf("alice unsubscribed from %v; want random only", unsubscribed)
	}

	// What it looks like, with a dot on general and on carol's
	// conversation: desktop, then a phone (the list a strip of chips),
	// then the phone with the join and message forms unfolded.
	clickRoom(t, a, dm)
	gus.send(&api.Message{Text: "one more in general"})
	postJSON(t, "http://"+nb.HTTP+"/v1/rooms/"+carolDM+"/messages", `{"user":"carol","text":"still there?"}`)
	poll(t, a, "dots on general and carol", unreadJS("general")+` && `+unreadJS(carolDM))
	r := mustEval[layoutReport](t, a, checkLayout(1280))
	screenshot(t, a, "rooms-desktop")
	checkReport(t, "rooms desktop", r)
	do(t, a, "phone viewport", chromedp.EmulateViewport(375, 667, chromedp.EmulateScale(1), chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait))
	poll(t, a, "the room strip on one line", `document.querySelector('[data-testid="room-list"]').getBoundingClientRect().height < 50`)
	poll(t, a, "the room shown in view in the strip", `(() => {
		const s = document.querySelector('[data-testid="room-list"]').getBoundingClientRect();
		const c = document.querySelector('[data-testid="room-list"] [aria-current="true"]').getBoundingClientRect();
		return c.width > 0 && c.left >= s.left - 1 && c.right <= s.right + 1;
	})()`)
	r = mustEval[layoutReport](t, a, checkLayout(375))
	screenshot(t, a, "rooms-phone")
	checkReport(t, "rooms phone", r)
	if r.MessagesTop > 667/2 {
		t.Errorf("on a phone the messages start at %.0f of 667 px", r.MessagesTop)
	}
	do(t, a, "unfold the forms", chromedp.Click(chromedp.CSS(`[data-testid="add-toggle"]`)))
	poll(t, a, "the forms shown", `document.querySelector('[data-testid="dm-input"]').getBoundingClientRect().width > 100`)
	r = mustEval[layoutReport](t, a, checkLayout(375))
	screenshot(t, a, "rooms-phone-add")
	if r.ScrollWidth > r.Width || len(r.Overflowing) > 0 {
		t.Errorf("phone with the forms: the page is %.0f px wide in %.0f; past the edge: %q", r.ScrollWidth, r.Width, r.Overflowing)
	}
	if n := mustEval[int](t, a, `window.__ws.opened.length`); n != 1 {
		t.Errorf("alice's page opened %d WebSockets by the end, want 1", n)
	}
}

// TestPageRoomsResume: the page's node restarts while the user is in three
// rooms (general, ops and a direct conversation) and messages arrive in
// each through another node. The page reconnects with one join that
// resumes every room from its own point (join.afterSeq for the first,
// join.rooms for the others, each with its epoch), and every room shows
// each message once, with no truncation; the rooms not shown get a dot.
func TestPageRoomsResume(t *testing.T) {
	chromePath(t)
	rd := testutil.StartRedis(t)
	redisURL := "redis://" + rd.Addr() + "/0"
	nx := startNode(t, "127.0.0.1:0", "-redis-url", redisURL, "-node-id", "nx")
	ny := startNode(t, "127.0.0.1:0", "-redis-url", redisURL, "-node-id", "ny")
	ctx := newBrowser(t)
	do(t, ctx, "spy on the sockets", spyOnSockets())

	joinPage(t, ctx, nx.HTTP, "erin", "general")
	do(t, ctx, "join ops",
		typeInto(chromedp.CSS(`[data-testid="new-room-input"]`), "ops"),
		chromedp.Click(chromedp.CSS(`[data-testid="room-join-button"]`)),
	)
	do(t, ctx, "message frank",
		typeInto(chromedp.CSS(`[data-testid="dm-input"]`), "frank"),
		chromedp.Click(chromedp.CSS(`[data-testid="dm-button"]`)),
	)
	poll(t, ctx, "the conversation with frank shown", `document.querySelector('[data-testid="message-list"]').dataset.room.startsWith("dm.")`)
	dm := mustEval[string](t, ctx, `document.querySelector('[data-testid="message-list"]').dataset.room`)
	rooms := []string{"general", "ops", dm}
	for _, room := range rooms {
		poll(t, ctx, room+" live", `document.querySelector(`+jsString(itemSel(room))+`).dataset.state === "live"`)
	}
	post := func(room, text string) {
		postJSON(t, "http://"+ny.HTTP+"/v1/rooms/"+room+"/messages", fmt.Sprintf(`{"user":"frank","text":%q}`, text))
	}
	for _, room := range rooms {
		post(room, "before "+room)
		poll(t, ctx, "before "+room, hasText(room, "before "+room))
	}
	clickRoom(t, ctx, "general")

	record(t, ctx, "status")
	nx.stop() // graceful: the page gets 1012 and retries
	poll(t, ctx, "reconnecting", `window.__seen["status"].some(s => s.state === "reconnecting")`)
	for _, room := range rooms {
		post(room, "while down "+room)
	}
	startNode(t, nx.HTTP, "-redis-url", redisURL, "-node-id", "nx2") // same address: the page reconnects to it
	poll(t, ctx, "live again", `document.querySelector('[data-testid="status"]').dataset.state === "live"`)
	for _, room := range rooms {
		poll(t, ctx, "missed message in "+room, hasText(room, "while down "+room))
	}
	post("general", "after general")
	poll(t, ctx, "after general", hasText("general", "after general"))
	for _, room := range rooms {
		want := []string{"before " + room, "while down " + room}
		if room == "general" {
			want = append(want, "after general")
		}
		if got := texts(t, ctx, room); !slices.Equal(got, want) {
			t.Errorf("%s shows %q, want %q", room, got, want)
		}
	}
	if n := mustEval[int](t, ctx, `document.querySelectorAll('[data-kind="truncated"]').length`); n != 0 {
		t.Errorf("%d truncation notices: the resume should have found every message", n)
	}
	for _, room := range []string{"ops", dm} {
		if !mustEval[bool](t, ctx, unreadJS(room)) {
			t.Errorf("%s, not shown, got a message while the page was away and has no dot", room)
		}
	}

	if n := mustEval[int](t, ctx, `window.__ws.opened.length`); n < 2 {
		t.Fatalf("the page opened %d WebSockets; it should have reconnected", n)
	}
	var joins []sentFrame
	for _, f := range sentFrames(t, ctx) {
		if f.Join != nil && f.Kind == "" && f.User != "" {
			joins = append(joins, f)
		}
	}
	if len(joins) < 2 {
		t.Fatalf("the page sent %d joins, want one per connection", len(joins))
	}
	last := joins[len(joins)-1].Join
	if joins[len(joins)-1].Room != "general" || last.AfterSeq == "" || last.AfterSeq == "0" || last.Epoch == "" || !last.Personal {
		t.Errorf("the resuming join in %q has %+v: want general from its own afterSeq and epoch, with the personal channel", joins[len(joins)-1].Room, *last)
	}
	resumed := map[string]bool{}
	for _, s := range last.Rooms {
		if s.AfterSeq == "" || s.AfterSeq == "0" || s.Epoch == "" {
			t.Errorf("the join lists %+v without a resume point", s)
		}
		resumed[s.Room] = true
	}
	if len(last.Rooms) != 2 || !resumed["ops"] || !resumed[dm] {
		t.Errorf("the resuming join lists %+v; want ops and %s, each from its own point", last.Rooms, dm)
	}
}

// TestPageDirectWithToken: on a node that requires JWTs, the page lists
// the conversations of the token's user (carol's message waits there),
// starts a direct conversation by name with the token (POST /v1/direct),
// and receives the other user's message in it.
func TestPageDirectWithToken(t *testing.T) {
	chromePath(t)
	secret := "0123456789abcdef0123456789abcdef"
	n := startNode(t, "127.0.0.1:0", "-jwt-secret", secret)
	mint := func(user string) string {
		tok, err := auth.Mint([]byte(secret), user, nil, time.Hour, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	alice, bob, carol := mint("alice"), mint("bob"), mint("carol")
	carolDM, _ := postAs(t, carol, "http://"+n.HTTP+"/v1/direct", `{"peer":"alice"}`)["room"].(string)
	postAs(t, carol, "http://"+n.HTTP+"/v1/rooms/"+carolDM+"/messages", `{"text":"signed and waiting"}`)

	ctx := newBrowser(t)
	do(t, ctx, "load",
		chromedp.Navigate("http://"+n.HTTP+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="name-input"]`)),
	)
	waitTokenProbe(t, ctx)
	do(t, ctx, "fill the token and join",
		typeInto(chromedp.CSS(`[data-testid="name-input"]`), "alice"),
		typeInto(chromedp.CSS(`[data-testid="token-input"]`), alice),
		chromedp.Click(chromedp.CSS(`[data-testid="join-button"]`)),
	)
	poll(t, ctx, "live with a token", `document.querySelector('[data-testid="status"]').dataset.state === "live"`)
	poll(t, ctx, "carol's conversation listed, unread", unreadJS(carolDM)+` &&
		document.querySelector(`+jsString(itemSel(carolDM))+`).textContent.includes("carol")`)

	do(t, ctx, "message bob",
		typeInto(chromedp.CSS(`[data-testid="dm-input"]`), "bob"),
		chromedp.Click(chromedp.CSS(`[data-testid="dm-button"]`)),
	)
	poll(t, ctx, "the conversation with bob shown and live", `(() => {
		const l = document.querySelector('[data-testid="message-list"]');
		return l.dataset.room.startsWith("dm.") && document.querySelector('[data-testid="room-list"] [aria-current="true"]').dataset.state === "live";
	})()`)
	dm := mustEval[string](t, ctx, `document.querySelector('[data-testid="message-list"]').dataset.room`)
	postAs(t, bob, "http://"+n.HTTP+"/v1/rooms/"+dm+"/messages", `{"text":"hello, signed"}`)
	poll(t, ctx, "bob's message in the conversation", hasText(dm, "hello, signed"))
	typeAndSend(t, ctx, "signed answer")
	poll(t, ctx, "the answer confirmed", `!!document.querySelector('.messages[data-room=`+jsString(dm)+`] .msg.own[data-seq]')`)
	if note := mustEval[string](t, ctx, `document.querySelector('[data-testid="rooms-note"]').textContent`); note != "" {
		t.Errorf("the room list says %q", note)
	}
}

// TestPagePrivateRoom: bob adds alice to his private room: her personal
// channel brings it into her list, unread; she reads and writes there;
// when bob removes her, the node ends her subscription and the page says
// so, greys the room out and stops her posting, while the rest of the
// page goes on (same socket).
func TestPagePrivateRoom(t *testing.T) {
	chromePath(t)
	n := startNode(t, "127.0.0.1:0")
	ctx := newBrowser(t)
	do(t, ctx, "spy on the sockets", spyOnSockets())
	joinPage(t, ctx, n.HTTP, "alice", "general")

	base := "http://" + n.HTTP
	postJSON(t, base+"/v1/rooms", `{"user":"bob","room":"team"}`)
	postJSON(t, base+"/v1/rooms/team/members", `{"user":"bob","member":"alice"}`)
	poll(t, ctx, "team in the list, private and unread", unreadJS("team")+` &&
		document.querySelector(`+jsString(itemSel("team"))+`).dataset.kind === "private" &&
		document.querySelector(`+jsString(itemSel("team"))+`).dataset.state === "live"`)
	postJSON(t, base+"/v1/rooms/team/messages", `{"user":"bob","text":"welcome to the team"}`)
	poll(t, ctx, "bob's message in team", hasText("team", "welcome to the team"))
	clickRoom(t, ctx, "team")
	typeAndSend(t, ctx, "thanks")
	poll(t, ctx, "alice's message confirmed", `!!document.querySelector('.messages[data-room="team"] .msg.own[data-seq]')`)

	req, _ := http.NewRequest(http.MethodDelete, base+"/v1/rooms/team/members/alice?user=bob", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("remove alice: %d", resp.StatusCode)
	}
	poll(t, ctx, "the removal said and the room closed to her", `!!document.querySelector('.messages[data-room="team"] [data-kind="removed"]') &&
		document.querySelector(`+jsString(itemSel("team"))+`).dataset.state === "removed" &&
		document.querySelector('[data-testid="message-input"]').disabled`)
	clickRoom(t, ctx, "general")
	if d := mustEval[bool](t, ctx, `document.querySelector('[data-testid="message-input"]').disabled`); d {
		t.Fatal("the input is disabled in general too")
	}
	typeAndSend(t, ctx, "still here")
	poll(t, ctx, "general still works", `!!document.querySelector('.messages[data-room="general"] .msg.own[data-seq]')`)
	if n := mustEval[int](t, ctx, `window.__ws.opened.length`); n != 1 {
		t.Errorf("the page opened %d WebSockets, want 1", n)
	}
}
