package browser_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"example.com/chat/internal/testutil"
)

// Chat state in the page (issue 15): scrolling back through a room's log
// (KIND_PAGE), edits, deletes and reactions seen by another user on
// another node, and unread counts that agree between two sessions of one
// user (KIND_READ on the personal channel).

// msgSel selects the message seq in room's list.
func msgSel(room string, seq uint64) string {
	return `.messages[data-room=` + jsString(room) + `] .msg[data-seq="` + strconv.FormatUint(seq, 10) + `"]`
}

// post sends text to room as user over REST and returns its seq.
func post(t *testing.T, httpAddr, room, user, text string) uint64 {
	t.Helper()
	m := postJSON(t, "http://"+httpAddr+"/v1/rooms/"+room+"/messages", fmt.Sprintf(`{"user":%q,"text":%q}`, user, text))
	seq, err := strconv.ParseUint(fmt.Sprint(m["seq"]), 10, 64)
	if err != nil || seq == 0 {
		t.Fatalf("POST %s to %s: answer %v has no seq", text, room, m)
	}
	return seq
}

// postEvent sends an edit, delete or reaction of message seq over REST.
func postEvent(t *testing.T, httpAddr, room, user, kind string, seq uint64, text string) {
	t.Helper()
	postJSON(t, "http://"+httpAddr+"/v1/rooms/"+room+"/messages",
		fmt.Sprintf(`{"user":%q,"kind":%q,"targetSeq":"%d","text":%q}`, user, kind, seq, text))
}

// wheelUp turns the mouse wheel up over the shown message list, as a
// user scrolling back does.
func wheelUp(t *testing.T, ctx context.Context) {
	t.Helper()
	c := mustEval[[]float64](t, ctx, `(() => { const r = document.querySelector('[data-testid="message-list"]').getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()`)
	do(t, ctx, "wheel up", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, wheelEvent, map[string]any{"type": "mouseWheel", "x": c[0], "y": c[1], "deltaX": 0, "deltaY": -4000})
		return err
	}))
}

// wheelEvent is Input.dispatchMouseEvent with parameters as given: the
// generated ones leave a zero deltaX out, which a wheel event needs.
var wheelEvent = cdp.Command[map[string]any, cdp.Empty]{Method: input.CommandDispatchMouseEvent}

// hover moves the mouse over sel (a message: its actions show).
func hover(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	do(t, ctx, "scroll to "+sel, chromedp.ScrollIntoView(chromedp.CSS(sel)))
	c := mustEval[[]float64](t, ctx, `(() => { const r = document.querySelector(`+jsString(sel)+`).getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()`)
	do(t, ctx, "hover "+sel, chromedp.MouseEvent(chromedp.MouseMoved, c[0], c[1]))
}

// shownSeqs returns the seqs of the messages in room's list, in order.
func shownSeqs(t *testing.T, ctx context.Context, room string) []uint64 {
	t.Helper()
	raw := mustEval[[]string](t, ctx, `[...document.querySelectorAll('.messages[data-room=`+jsString(room)+`] .msg')].map(e => e.dataset.seq || "")`)
	out := make([]uint64, len(raw))
	for i, s := range raw {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("message %d of %s has seq %q", i, room, s)
		}
		out[i] = n
	}
	return out
}

// edgeState is the state of the top of the shown list: "more",
// "loading", "start", "truncated" or "error".
const edgeState = `document.querySelector('[data-testid="message-list"] [data-testid="history-edge"]').dataset.state`

// scrollToStart turns the wheel up until the shown list says where it
// starts (want: "start" or "truncated"), waiting for each page.
func scrollToStart(t *testing.T, ctx context.Context, want string) (wheels int) {
	t.Helper()
	for wheels = 0; wheels < 100; wheels++ {
		if s := mustEval[string](t, ctx, edgeState); s == want {
			return wheels
		} else if s == "start" || s == "truncated" || s == "error" {
			t.Fatalf("the list's top says %q (%q), want %q", s, mustEval[string](t, ctx, `document.querySelector('[data-testid="message-list"] .edge').textContent`), want)
		}
		n := mustEval[int](t, ctx, `document.querySelectorAll('[data-testid="message-list"] .msg').length`)
		wheelUp(t, ctx)
		poll(t, ctx, "a page loaded or the start", fmt.Sprintf(`document.querySelectorAll('[data-testid="message-list"] .msg').length > %d || %s === %q`, n, edgeState, want))
	}
	t.Fatalf("no start of the list after %d turns of the wheel", wheels)
	return wheels
}

// TestPageScrollback: a room of 400 messages on two nodes sharing a real
// Redis. The page joins through the other node and shows the replay (the
// newest 100); scrolling up loads page after page (KIND_PAGE on its one
// socket) above the oldest message, keeping what is on screen in place,
// until the top says it is the start of the conversation. Every message
// is then shown exactly once, in order, with its current state (an
// edited text, a tombstone, reactions from before the page joined), and
// messages arriving while scrolling land at the bottom, once.
func TestPageScrollback(t *testing.T) {
	chromePath(t)
	rd := testutil.StartRedis(t)
	redisURL := "redis://" + rd.Addr() + "/0"
	na := startNode(t, "127.0.0.1:0", "-redis-url", redisURL, "-node-id", "na", "-send-rate", "100000", "-log-size", "1000")
	nb := startNode(t, "127.0.0.1:0", "-redis-url", redisURL, "-node-id", "nb", "-send-rate", "100000", "-log-size", "1000")

	const total = 400
	seqs := make([]uint64, total)
	want := make([]string, total)
	for i := range total {
		user := "bot"
		if i%3 == 0 {
			user = "ann"
		}
		want[i] = fmt.Sprintf("m%03d", i+1)
		seqs[i] = post(t, nb.HTTP, "long", user, want[i])
	}
	// State from before the page came: an edit, a delete, reactions.
	postEvent(t, nb.HTTP, "long", "ann", "KIND_EDIT", seqs[9], "m010 (fixed)")
	want[9] = "m010 (fixed)"
	postEvent(t, nb.HTTP, "long", "ann", "KIND_DELETE", seqs[18], "")
	want[18] = ""
	postEvent(t, nb.HTTP, "long", "ann", "KIND_REACTION", seqs[29], "👍")
	postEvent(t, nb.HTTP, "long", "bot", "KIND_REACTION", seqs[29], "👍")

	ctx := newBrowser(t)
	do(t, ctx, "spy on the sockets", spyOnSockets(), chromedp.EmulateViewport(1280, 800, chromedp.EmulateScale(1)))
	joinPage(t, ctx, na.HTTP, "reader", "long")
	// The replay is the newest 100 entries of the log: 96 messages and
	// the 4 events, which the messages show.
	poll(t, ctx, "the replay", hasText("long", "m400"))
	if got := texts(t, ctx, "long"); len(got) < 90 || !slices.Equal(got, want[total-len(got):]) {
		t.Fatalf("the replay shows %d messages %q..., want the newest", len(got), got[:min(3, len(got))])
	}

	// Scroll up. Half way, messages arrive: they go to the bottom.
	var wheels int
	for range 3 {
		wheelUp(t, ctx)
		n := mustEval[int](t, ctx, `document.querySelectorAll('.messages[data-room="long"] .msg').length`)
		poll(t, ctx, "a page", fmt.Sprintf(`document.querySelectorAll('.messages[data-room="long"] .msg').length > %d`, n))
		wheels++
	}
	// What is at the top of the view stays there when a page comes in
	// above it.
	n := mustEval[int](t, ctx, `document.querySelectorAll('.messages[data-room="long"] .msg').length`)
	top := mustEval[string](t, ctx, `(() => {
		const l = document.querySelector('[data-testid="message-list"]');
		l.scrollTop = 0;
		const m = l.querySelector(".msg");
		window.__anchor = { seq: m.dataset.seq, top: m.getBoundingClientRect().top };
		return m.dataset.seq;
	})()`)
	poll(t, ctx, "a page after scrolling to the top", fmt.Sprintf(`document.querySelectorAll('.messages[data-room="long"] .msg').length > %d`, n))
	if moved := mustEval[float64](t, ctx, `(() => {
		const m = document.querySelector('[data-testid="message-list"] .msg[data-seq="' + window.__anchor.seq + '"]');
		return Math.abs(m.getBoundingClientRect().top - window.__anchor.top);
	})()`); moved > 2 {
		t.Errorf("message %s moved %.0f px on screen when the page above it came in", top, moved)
	}
	live := []string{"live 1", "live 2"}
	for _, s := range live {
		post(t, nb.HTTP, "long", "bot", s)
	}
	wheels += scrollToStart(t, ctx, "start")
	poll(t, ctx, "the live messages", hasText("long", "live 2"))

	got := texts(t, ctx, "long")
	if all := append(slices.Clone(want), live...); !slices.Equal(got, all) {
		t.Errorf("after scrolling back the room shows %d messages, want %d in order", len(got), len(all))
		for i := range max(len(got), len(all)) {
			if i >= len(got) || i >= len(all) || got[i] != all[i] {
				t.Fatalf("first difference at %d: %q", i, got[max(0, i-2):min(len(got), i+3)])
			}
		}
	}
	shown := shownSeqs(t, ctx, "long")
	if !slices.IsSorted(shown) || len(slices.Compact(slices.Clone(shown))) != len(shown) || shown[0] != seqs[0] {
		t.Errorf("the seqs shown are not each message once, in order, from %d: %v...", seqs[0], shown[:min(5, len(shown))])
	}
	if s := mustEval[string](t, ctx, `document.querySelector('[data-testid="message-list"] .edge').textContent`); !strings.Contains(s, "start of the conversation") {
		t.Errorf("the top of the list says %q", s)
	}
	if !mustEval[bool](t, ctx, `!!document.querySelector(`+jsString(msgSel("long", seqs[18])+` [data-testid="tombstone"]`)+`)`) {
		t.Errorf("the deleted message m019 shows no tombstone")
	}
	if e := mustEval[string](t, ctx, `document.querySelector(`+jsString(msgSel("long", seqs[9])+` .edited`)+`).textContent`); e != "(edited)" {
		t.Errorf("the edited message m010 says %q, want (edited)", e)
	}
	if c := mustEval[string](t, ctx, `document.querySelector(`+jsString(msgSel("long", seqs[29])+` .reactions [data-emoji="👍"]`)+`)?.textContent || ""`); c != "👍 2" {
		t.Errorf("m030's reactions show %q, want 👍 2", c)
	}
	// The first message of the room keeps its header; consecutive
	// messages of one user share one across page boundaries.
	if c := mustEval[bool](t, ctx, `document.querySelector(`+jsString(msgSel("long", seqs[0]))+`).classList.contains("continued")`); c {
		t.Errorf("the oldest message has no header")
	}

	var pages int
	for _, raw := range mustEval[[]string](t, ctx, `window.__ws.sent`) {
		var f struct {
			Kind    string `json:"kind"`
			History struct {
				Room      string `json:"room"`
				BeforeSeq string `json:"beforeSeq"`
			} `json:"history"`
		}
		if err := json.Unmarshal([]byte(raw), &f); err != nil {
			t.Fatalf("the page sent %q: %v", raw, err)
		}
		if f.Kind == "KIND_PAGE" {
			pages++
			if f.History.Room != "long" || f.History.BeforeSeq == "" {
				t.Errorf("a page request %s", raw)
			}
		}
	}
	if pages < 6 || pages > 8 {
		t.Errorf("the page asked for %d pages of 50 for 300 messages (%d turns of the wheel)", pages, wheels)
	}
	if n := mustEval[int](t, ctx, `window.__ws.opened.length`); n != 1 {
		t.Errorf("the page opened %d WebSockets, want 1", n)
	}
	t.Logf("scrolled back through %d messages in %d pages (%d turns of the wheel)", total, pages, wheels)
}

// TestPageScrollbackTruncated: a room whose log dropped its oldest
// messages (-log-size 150 of 200): scrolling back ends at the oldest one
// kept, and the page says in words that older ones are no longer kept.
func TestPageScrollbackTruncated(t *testing.T) {
	chromePath(t)
	n := startNode(t, "127.0.0.1:0", "-send-rate", "100000", "-log-size", "150", "-history-size", "50")
	var seqs []uint64
	for i := range 200 {
		seqs = append(seqs, post(t, n.HTTP, "old", "bot", fmt.Sprintf("o%03d", i+1)))
	}
	ctx := newBrowser(t)
	joinPage(t, ctx, n.HTTP, "reader", "old")
	poll(t, ctx, "the replay", `document.querySelectorAll('.messages[data-room="old"] .msg').length === 50`)
	scrollToStart(t, ctx, "truncated")
	shown := shownSeqs(t, ctx, "old")
	if len(shown) != 150 || shown[0] != seqs[50] || !slices.Equal(shown, seqs[50:]) {
		t.Errorf("shows %d messages from seq %d; want the 150 kept, from %d", len(shown), shown[0], seqs[50])
	}
	if s := mustEval[string](t, ctx, `document.querySelector('[data-testid="message-list"] .edge').textContent`); !strings.Contains(s, "no longer kept") {
		t.Errorf("the top of a truncated log says %q", s)
	}
}

// TestPageEditsAndReactions: alice (node na) and bob (node nb) share a
// real Redis. alice edits her message from its hover menu: bob sees the
// new text with "(edited)", and so does she (the event comes back on her
// own stream); she deletes another: both see the tombstone. bob has no
// edit or delete on alice's messages. alice reacts to bob's message with a
// quick emoji: bob sees the count; bob reacts too (2), alice toggles hers
// off (1). Screenshots at 1280x800 and 375x667 of the room with the
// edited message and the reactions.
func TestPageEditsAndReactions(t *testing.T) {
	chromePath(t)
	rd := testutil.StartRedis(t)
	redisURL := "redis://" + rd.Addr() + "/0"
	na := startNode(t, "127.0.0.1:0", "-redis-url", redisURL, "-node-id", "na")
	nb := startNode(t, "127.0.0.1:0", "-redis-url", redisURL, "-node-id", "nb")

	a := newBrowser(t)
	b := newTab(t, a)
	do(t, a, "alice's viewport", spyOnSockets(), chromedp.EmulateViewport(1280, 800, chromedp.EmulateScale(1)))
	joinPage(t, a, na.HTTP, "alice", "state")
	joinPage(t, b, nb.HTTP, "bob", "state")
	poll(t, a, "bob online", `!!document.querySelector('[data-testid="online-users"] [data-user="bob"]')`)

	typeAndSend(t, a, "see you at 5")
	typeAndSend(t, a, "a typo here")
	typeAndSend(t, a, "<b>and</b> this goes")
	poll(t, a, "alice's messages confirmed", `document.querySelectorAll('.messages[data-room="state"] .msg.own[data-seq]').length === 3`)
	own := shownSeqs(t, a, "state")
	poll(t, b, "alice's messages at bob's", hasText("state", "<b>and</b> this goes"))
	bobSeq := post(t, nb.HTTP, "state", "bob", "lunch tomorrow?")
	typeAndSend(t, b, "or dinner")
	poll(t, a, "bob's messages at alice's", hasText("state", "lunch tomorrow?")+` && `+hasText("state", "or dinner"))

	// bob may not edit or delete alice's messages: no such buttons.
	if n := mustEval[int](t, b, `document.querySelectorAll(`+jsString(msgSel("state", own[0])+` [data-action]`)+`).length`); n != 0 {
		t.Errorf("bob's page offers %d edit/delete actions on alice's message", n)
	}

	// alice edits her second message from its menu.
	sel := msgSel("state", own[1])
	hover(t, a, sel)
	do(t, a, "edit", chromedp.Click(chromedp.CSS(sel+` [data-action="edit"]`)))
	poll(t, a, "the edit form holds the text", `document.querySelector(`+jsString(sel+` [data-testid="edit-input"]`)+`)?.value === "a typo here"`)
	do(t, a, "type the new text",
		chromedp.Evaluate[chromedp.Void](`document.querySelector(`+jsString(sel+` [data-testid="edit-input"]`)+`).value = ""`),
		typeInto(chromedp.CSS(sel+` [data-testid="edit-input"]`), "no typo <i>here</i>"),
		chromedp.Click(chromedp.CSS(sel+` [data-testid="edit-save"]`)),
	)
	for _, c := range []struct {
		who string
		ctx context.Context
	}{{"bob", b}, {"alice", a}} {
		poll(t, c.ctx, "the edit at "+c.who+"'s", `document.querySelector(`+jsString(sel+` .text`)+`).textContent === "no typo <i>here</i>" &&
			document.querySelector(`+jsString(sel+` .edited`)+`).textContent === "(edited)"`)
	}

	// alice deletes her third message (delete asks twice).
	sel3 := msgSel("state", own[2])
	hover(t, a, sel3)
	do(t, a, "delete", chromedp.Click(chromedp.CSS(sel3+` [data-action="delete"]`)))
	if armed := mustEval[string](t, a, `document.querySelector(`+jsString(sel3+` [data-action="delete"]`)+`).textContent`); armed != "delete?" {
		t.Errorf("the first click on delete shows %q, want a question", armed)
	}
	do(t, a, "confirm the delete", chromedp.Click(chromedp.CSS(sel3+` [data-action="delete"]`)))
	for _, c := range []struct {
		who string
		ctx context.Context
	}{{"bob", b}, {"alice", a}} {
		poll(t, c.ctx, "the tombstone at "+c.who+"'s", `!!document.querySelector(`+jsString(sel3+` [data-testid="tombstone"]`)+`) &&
			document.querySelector(`+jsString(sel3+` .text`)+`).textContent === "" &&
			!document.querySelector(`+jsString(sel3+` [data-testid="message-actions"]`)+`)`)
	}

	// alice reacts to bob's message from its menu; bob sees it and adds his.
	bsel := msgSel("state", bobSeq)
	chip := func(ctx context.Context) string {
		return mustEval[string](t, ctx, `document.querySelector(`+jsString(bsel+` .reactions [data-emoji="👍"]`)+`)?.textContent || ""`)
	}
	hover(t, a, bsel)
	do(t, a, "react", chromedp.Click(chromedp.CSS(bsel+` [data-testid="message-actions"] [data-emoji="👍"]`)))
	poll(t, b, "alice's reaction at bob's", `document.querySelector(`+jsString(bsel+` .reactions [data-emoji="👍"]`)+`)?.textContent === "👍 1"`)
	do(t, b, "bob reacts from the chip", chromedp.Click(chromedp.CSS(bsel+` .reactions [data-emoji="👍"]`)))
	for _, ctx := range []context.Context{a, b} {
		poll(t, ctx, "two reactions", `document.querySelector(`+jsString(bsel+` .reactions [data-emoji="👍"]`)+`)?.textContent === "👍 2"`)
	}
	if p := mustEval[string](t, a, `document.querySelector(`+jsString(bsel+` .reactions [data-emoji="👍"]`)+`).getAttribute("aria-pressed")`); p != "true" {
		t.Errorf("alice's own reaction is not marked hers (aria-pressed %q)", p)
	}
	do(t, a, "alice takes hers back", chromedp.Click(chromedp.CSS(bsel+` .reactions [data-emoji="👍"]`)))
	poll(t, b, "one reaction left", `document.querySelector(`+jsString(bsel+` .reactions [data-emoji="👍"]`)+`)?.textContent === "👍 1"`)
	hover(t, a, bsel)
	do(t, a, "a second emoji", chromedp.Click(chromedp.CSS(bsel+` [data-testid="message-actions"] [data-emoji="🎉"]`)))
	poll(t, b, "🎉 at bob's", `document.querySelector(`+jsString(bsel+` .reactions [data-emoji="🎉"]`)+`)?.textContent === "🎉 1"`)
	if c := chip(a); c != "👍 1" {
		t.Errorf("alice's page shows %q after taking her reaction back", c)
	}

	// Network text is text: no markup from the edits or messages.
	for _, ctx := range []context.Context{a, b} {
		if n := mustEval[int](t, ctx, `document.querySelectorAll('.messages b, .messages i').length`); n != 0 {
			t.Errorf("user text became markup: %d elements", n)
		}
	}
	// The same messages in both, each once; the edit was no new message.
	if ga, gb := texts(t, a, "state"), texts(t, b, "state"); !slices.Equal(ga, gb) || len(ga) != 5 {
		t.Errorf("alice shows %q, bob %q", ga, gb)
	}

	// A late joiner's replay shows the same state.
	c := newTab(t, a)
	joinPage(t, c, na.HTTP, "carol", "state")
	poll(t, c, "the state in carol's replay", `document.querySelector(`+jsString(sel+` .edited`)+`)?.textContent === "(edited)" &&
		!!document.querySelector(`+jsString(sel3+` [data-testid="tombstone"]`)+`) &&
		document.querySelector(`+jsString(bsel+` .reactions [data-emoji="🎉"]`)+`)?.textContent === "🎉 1"`)

	// What it looks like: the menu open over bob's message.
	hover(t, a, bsel)
	r := mustEval[layoutReport](t, a, checkLayout(1280))
	screenshot(t, a, "state-desktop")
	checkReport(t, "state desktop", r)
	do(t, a, "phone viewport", chromedp.EmulateViewport(375, 667, chromedp.EmulateScale(1), chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait))
	poll(t, a, "phone layout", `document.querySelector('[data-testid="room-list"]').getBoundingClientRect().height < 50`)
	do(t, a, "tap bob's message", chromedp.Click(chromedp.CSS(bsel+` .text`)))
	r = mustEval[layoutReport](t, a, checkLayout(375))
	screenshot(t, a, "state-phone")
	checkReport(t, "state phone", r)
	if n := mustEval[int](t, a, `window.__ws.opened.length`); n != 1 {
		t.Errorf("alice's page opened %d WebSockets, want 1", n)
	}
}

// countJS is room's unread count in the room list ("" for none).
func countJS(room string) string {
	return `(document.querySelector(` + jsString(itemSel(room)) + `)?.dataset.count || "")`
}

// TestPageUnreadCounts: xena has two sessions (two browser contexts: a
// laptop and a phone) on two nodes sharing a real Redis. carol's direct
// messages, sent while xena was away, are counted from the conversations
// call on connect (120 in both, more than the join replays). Messages to a room neither shows raise its
// count in both. Showing the room in one session marks it read (KIND_READ,
// once however many messages): the other session loses its count too,
// through the personal channel, while still showing another room; so
// does opening the direct conversation.
func TestPageUnreadCounts(t *testing.T) {
	chromePath(t)
	rd := testutil.StartRedis(t)
	redisURL := "redis://" + rd.Addr() + "/0"
	na := startNode(t, "127.0.0.1:0", "-redis-url", redisURL, "-node-id", "na", "-send-rate", "100000")
	nb := startNode(t, "127.0.0.1:0", "-redis-url", redisURL, "-node-id", "nb", "-send-rate", "100000")
	// More than a join replays (100): the count must come from the node.
	dm, _ := postJSON(t, "http://"+nb.HTTP+"/v1/direct", `{"user":"carol","peer":"xena"}`)["room"].(string)
	for i := range 120 {
		post(t, nb.HTTP, dm, "carol", fmt.Sprintf("are you there? (%d)", i+1))
	}

	a := newBrowser(t)
	b := newTab(t, a)
	do(t, a, "spy on A, a laptop", spyOnSockets(), chromedp.EmulateViewport(1280, 800, chromedp.EmulateScale(1)))
	do(t, b, "spy on B, a phone", spyOnSockets(),
		chromedp.EmulateViewport(375, 667, chromedp.EmulateScale(1), chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait))
	joinPage(t, a, na.HTTP, "xena", "general")
	joinPage(t, b, nb.HTTP, "xena", "general")
	for _, ctx := range []context.Context{a, b} {
		poll(t, ctx, "carol's 120 unread", countJS(dm)+` === "120"`)
		if ctx == b { // the phone: the forms fold away behind "+"
			do(t, ctx, "unfold the forms", chromedp.Click(chromedp.CSS(`[data-testid="add-toggle"]`)))
		}
		do(t, ctx, "join news",
			typeInto(chromedp.CSS(`[data-testid="new-room-input"]`), "news"),
			chromedp.Click(chromedp.CSS(`[data-testid="room-join-button"]`)),
		)
		poll(t, ctx, "news live", `document.querySelector(`+jsString(itemSel("news"))+`).dataset.state === "live"`)
		// An empty room still says so, beside the (empty) top of its list.
		if e := mustEval[string](t, ctx, `getComputedStyle(document.querySelector('[data-testid="message-list"]'), "::before").content`); !strings.Contains(e, "No messages in #news yet") {
			t.Errorf("the empty news says %s", e)
		}
		clickRoom(t, ctx, "general")
	}
	for _, ctx := range []context.Context{a, b} {
		if h := mustEval[bool](t, ctx, `document.hidden`); h {
			t.Fatal("a session's page is hidden: it would mark nothing read")
		}
	}

	for i := range 3 {
		post(t, nb.HTTP, "news", "dan", fmt.Sprintf("news %d", i))
	}
	post(t, na.HTTP, "general", "dan", "in general, shown")
	for _, ctx := range []context.Context{a, b} {
		poll(t, ctx, "3 unread in news", countJS("news")+` === "3"`)
		poll(t, ctx, "general, shown, not counted", hasText("general", "in general, shown")+` && `+countJS("general")+` === ""`)
	}
	for _, c := range []struct {
		ctx   context.Context
		name  string
		width int64
	}{{a, "unread-desktop", 1280}, {b, "unread-phone", 375}} {
		if s := mustEval[string](t, c.ctx, `document.querySelector(`+jsString(itemSel("news")+` .count`)+`).textContent`); s != "3" {
			t.Errorf("%s: news's count reads %q", c.name, s)
		}
		r := mustEval[layoutReport](t, c.ctx, checkLayout(c.width))
		screenshot(t, c.ctx, c.name)
		if r.ScrollWidth > r.Width || len(r.Overflowing) > 0 || !r.InputVisible {
			t.Errorf("%s: the page is %.0f px wide in %.0f, past the edge: %q; input visible %v", c.name, r.ScrollWidth, r.Width, r.Overflowing, r.InputVisible)
		}
	}

	// A shows news: its count goes, here and on B, which still shows general.
	clickRoom(t, a, "news")
	poll(t, a, "news read in A", countJS("news")+` === "" && `+hasText("news", "news 2"))
	poll(t, b, "news read in B via A's marker", countJS("news")+` === "" && !`+unreadJS("news"))
	if cur := mustEval[string](t, b, `document.querySelector('[data-testid="message-list"]').dataset.room`); cur != "general" {
		t.Errorf("B shows %q", cur)
	}
	// New messages count from the marker on.
	clickRoom(t, a, "general")
	post(t, nb.HTTP, "news", "dan", "news 3")
	for _, ctx := range []context.Context{a, b} {
		poll(t, ctx, "1 new in news", countJS("news")+` === "1"`)
	}

	// B opens carol's conversation: A loses that count.
	clickRoom(t, b, dm)
	poll(t, a, "carol's conversation read in A via B", countJS(dm)+` === ""`)

	// The node agrees: nothing unread for xena in the direct conversation.
	resp, err := http.Get("http://" + na.HTTP + "/v1/users/xena/conversations")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var cs struct {
		Conversations []struct {
			Room    string `json:"room"`
			Unread  int    `json:"unread"`
			ReadSeq any    `json:"readSeq"`
		} `json:"conversations"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&cs); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range cs.Conversations {
		if c.Room == dm {
			found = true
			if c.Unread != 0 {
				t.Errorf("the node counts %d unread for xena with carol (marker %v)", c.Unread, c.ReadSeq)
			}
		}
	}
	if !found {
		t.Errorf("xena's conversations %+v lack %s", cs.Conversations, dm)
	}

	// KIND_READ is debounced: A sent one marker for news, not one per message.
	var reads []string
	for _, raw := range mustEval[[]string](t, a, `window.__ws.sent`) {
		var f struct{ Kind, Room string }
		if json.Unmarshal([]byte(raw), &f) == nil && f.Kind == "KIND_READ" && f.Room == "news" {
			reads = append(reads, raw)
		}
	}
	if len(reads) != 1 {
		t.Errorf("A sent %d read markers for news: %q", len(reads), reads)
	}
}
