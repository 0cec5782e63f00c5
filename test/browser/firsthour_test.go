package browser_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"example.com/chat/api"
	"example.com/chat/pkg/auth"
)

// What a newcomer meets in the first hour (issue 16): the page asks for a
// token when the node wants one, keeps its layout, says "reconnecting…"
// calmly, makes links clickable without markup, has an icon, and is usable
// on a phone and in dark mode.

// screenshotDir is where the layout tests leave their screenshots:
// $CHAT_SCREENSHOT_DIR, or chat-screens in the temporary directory.
func screenshotDir(t *testing.T) string {
	d := os.Getenv("CHAT_SCREENSHOT_DIR")
	if d == "" {
		d = filepath.Join(os.TempDir(), "chat-screens")
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(screenshotDir(t), name+".png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatalf("write screenshot: %v", err)
	}
	t.Logf("screenshot %s", path)
}

func colorScheme(scheme string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
		})
		return err
	})
}

const sel = `document.querySelector`

// TestPageTokenFlow: against a node that requires a token, the page shows
// the token field as required, refuses to join without one, says so when
// the node refuses a bad one (instead of "server unreachable"), and joins
// once a good one is entered; Join stays usable throughout.
func TestPageTokenFlow(t *testing.T) {
	chromePath(t)
	secret := "0123456789abcdef0123456789abcdef"
	n := startNode(t, "127.0.0.1:0", "-jwt-secret", secret)
	ctx := newBrowser(t)
	tok, err := auth.Mint([]byte(secret), "tina", nil, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	do(t, ctx, "load",
		chromedp.Navigate("http://"+n.HTTP+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="name-input"]`)),
	)
	poll(t, ctx, "the token field shown as required", sel+`('[data-testid="token-input"]').getAttribute("aria-required") === "true" && !`+sel+`('[data-testid="token-label"]').hidden`)

	do(t, ctx, "join without a token",
		typeInto(chromedp.CSS(`[data-testid="name-input"]`), "tina"),
		typeInto(chromedp.CSS(`[data-testid="room-input"]`), "vault"),
		chromedp.Click(chromedp.CSS(`[data-testid="join-button"]`)),
	)
	poll(t, ctx, "'requires a token'", sel+`('[data-testid="status"]').textContent.includes("requires a token")`)

	do(t, ctx, "join with a bad token",
		typeInto(chromedp.CSS(`[data-testid="token-input"]`), "not-a-token"),
		chromedp.Click(chromedp.CSS(`[data-testid="join-button"]`)),
	)
	poll(t, ctx, "the token refusal said", `!!`+sel+`('[data-testid="message-list"] [data-kind="token"]') &&
		`+sel+`('[data-testid="status"]').textContent.includes("refused the token")`)
	if s := mustEval[string](t, ctx, sel+`('[data-testid="status"]').textContent`); strings.Contains(s, "unreachable") {
		t.Errorf("status %q: a refused token is not an unreachable server", s)
	}
	if d := mustEval[bool](t, ctx, sel+`('[data-testid="join-button"]').disabled`); d {
		t.Fatal("Join is disabled after the refusal")
	}

	do(t, ctx, "enter the good token and join",
		chromedp.Evaluate[chromedp.Void](sel+`('[data-testid="token-input"]').value = ""`),
		typeInto(chromedp.CSS(`[data-testid="token-input"]`), tok),
	)
	if d := mustEval[bool](t, ctx, sel+`('[data-testid="join-button"]').disabled`); d {
		t.Fatal("Join is disabled once a token is typed")
	}
	do(t, ctx, "join", chromedp.Click(chromedp.CSS(`[data-testid="join-button"]`)))
	poll(t, ctx, "live with the token", sel+`('[data-testid="status"]').dataset.state === "live"`)
}

// TestPageLinksAndIcon: URLs in messages are links (http and https only,
// with rel=noopener), and nothing in a message becomes markup; the page's
// icon is served, under /favicon.ico too.
func TestPageLinksAndIcon(t *testing.T) {
	chromePath(t)
	n := startNode(t, "127.0.0.1:0")
	ctx := newBrowser(t)
	joinPage(t, ctx, n.HTTP, "lena", "links")
	ivan := joinGRPC(t, n.GRPC, "ivan", "links", true)
	text := `see https://example.com/a?b=1&c=2. not javascript:alert(1) nor <img src=x onerror=alert(1)> or <a href="https://evil.example/">x</a>`
	ivan.send(&api.Message{Text: text})
	poll(t, ctx, "ivan's message", `[...document.querySelectorAll('[data-testid="message-list"] [data-user="ivan"] .text')].some(e => e.textContent === `+jsString(text)+`)`)
	type link struct{ Href, Text, Rel, Target string }
	links := mustEval[[]link](t, ctx, `[...document.querySelectorAll('[data-testid="message-list"] [data-user="ivan"] .text a')]
		.map(a => ({href: a.href, text: a.textContent, rel: a.rel, target: a.target}))`)
	want := []link{
		{"https://example.com/a?b=1&c=2", "https://example.com/a?b=1&c=2", "noopener noreferrer nofollow", "_blank"},
		{"https://evil.example/", "https://evil.example/", "noopener noreferrer nofollow", "_blank"},
	}
	if fmt.Sprint(links) != fmt.Sprint(want) {
		t.Errorf("links %+v\nwant %+v", links, want)
	}
	if c := mustEval[int](t, ctx, `document.querySelectorAll('[data-testid="message-list"] img, [data-testid="message-list"] [onerror]').length`); c != 0 {
		t.Errorf("message text became markup: %d elements", c)
	}

	for _, p := range []string{"/favicon.svg", "/favicon.ico"} {
		resp, err := http.Get("http://" + n.HTTP + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "svg") || !strings.Contains(string(body), "<svg") {
			t.Errorf("GET %s: %d %s", p, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if href := mustEval[string](t, ctx, sel+`('link[rel="icon"]').href`); href != "http://"+n.HTTP+"/favicon.svg" {
		t.Errorf("icon link %q", href)
	}
}

// layoutReport is what the layout check measures in the page.
type layoutReport struct {
	Width, Height   float64
	ScrollWidth     float64
	Overflowing     []string // elements whose box passes the viewport's right edge
	InputVisible    bool     // the message input is on screen and not covered
	SendVisible     bool
	OnlineVisible   bool // the online list shows a user
	HeaderHeight    float64
	MessagesTop     float64
	TokenShown      bool
	MinNameContrast float64
}

// checkLayout measures the page in a viewport width px wide: overflow,
// the input, the online list, and the contrast of every user name against
// what is behind it. The width is the emulated device's, not innerWidth: a
// mobile browser widens its layout viewport to content that overflows.
func checkLayout(width int64) string {
	return fmt.Sprintf(`(() => {
	const W = %d, H = window.innerHeight;
	const over = [];
	for (const e of document.querySelectorAll("body *")) {
		const r = e.getBoundingClientRect();
		if (r.width === 0 && r.height === 0) continue;
		// Inside a container that scrolls sideways on purpose (the phone's
		// online strip), only the container must fit.
		let clip = e.parentElement, clipped = false;
		for (; clip && clip !== document.body; clip = clip.parentElement) {
			const ox = getComputedStyle(clip).overflowX;
			if (ox === "auto" || ox === "scroll" || ox === "hidden") { clipped = true; break; }
		}
		if (clipped) continue;
		if (r.right > W + 0.5 || r.left < -0.5) over.push((e.id || e.className || e.tagName) + " " + Math.round(r.left) + ".." + Math.round(r.right));
	}
	const visible = e => {
		const r = e.getBoundingClientRect();
		if (r.width < 40 || r.height < 10 || r.top < 0 || r.bottom > H || r.left < 0 || r.right > W) return false;
		const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
		return hit === e || e.contains(hit);
	};
	const lum = c => {
		const m = c.match(/[\d.]+/g).map(Number);
		const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
		return { l: 0.2126 * f(m[0]) + 0.7152 * f(m[1]) + 0.0722 * f(m[2]), a: m.length > 3 ? m[3] : 1 };
	};
	const bg = e => {
		for (; e; e = e.parentElement) {
			const c = getComputedStyle(e).backgroundColor;
			if (lum(c).a > 0) return c;
		}
		return getComputedStyle(document.documentElement).backgroundColor;
	};
	let minContrast = 99;
	for (const u of document.querySelectorAll('[data-testid="message-list"] .msg .user')) {
		const a = lum(getComputedStyle(u).color).l, b = lum(bg(u)).l;
		const c = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
		if (u.getClientRects().length && c < minContrast) minContrast = c;
	}
	const online = document.querySelector('[data-testid="online-users"] li');
	return {
		width: W, height: H, scrollWidth: Math.max(document.documentElement.scrollWidth, window.innerWidth), overflowing: over,
		inputVisible: visible(document.querySelector('[data-testid="message-input"]')),
		sendVisible: visible(document.querySelector('[data-testid="send-button"]')),
		onlineVisible: !!online && (() => { const r = online.getBoundingClientRect(); return r.width > 0 && r.top >= 0 && r.bottom <= H && r.left >= 0 && r.left < W; })(),
		headerHeight: document.querySelector("header.top").getBoundingClientRect().height,
		messagesTop: document.querySelector('[data-testid="message-list"]').getBoundingClientRect().top,
		tokenShown: !document.querySelector('[data-testid="token-label"]').hidden,
		minNameContrast: minContrast,
	};
})()`, width)
}

// TestPageLayout: at desktop and phone sizes, in light and dark mode, with
// long words, long links and several users, nothing passes the screen's
// edge, the message input and the online list are visible, user names
// are readable (contrast at least 4.5:1), and the layout does not move
// while the page reconnects. Screenshots of each are left in
// screenshotDir.
func TestPageLayout(t *testing.T) {
	chromePath(t)
	for _, c := range []struct {
		name          string
		width, height int64
		mobile        bool
	}{
		{"desktop", 1280, 800, false},
		{"phone", 375, 667, true},
	} {
		for _, scheme := range []string{"light", "dark"} {
			t.Run(c.name+"-"+scheme, func(t *testing.T) {
				n := startNode(t, "127.0.0.1:0")
				ctx := newBrowser(t)
				opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(1)}
				if c.mobile {
					opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait)
				}
				do(t, ctx, "viewport", chromedp.EmulateViewport(c.width, c.height, opts...), colorScheme(scheme))
				joinPage(t, ctx, n.HTTP, "alice", "layout")
				var users []*grpcUser
				for _, name := range []string{"bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory"} {
					users = append(users, joinGRPC(t, n.GRPC, name, "layout", true))
				}
				users[0].send(&api.Message{Text: "a very long word: " + strings.Repeat("supercalifragilistic", 12)})
				users[1].send(&api.Message{Text: "and a long link https://example.com/" + strings.Repeat("path/", 40) + "?q=" + strings.Repeat("x", 80)})
				for i, u := range users[2:] {
					u.send(&api.Message{Text: fmt.Sprintf("message %d from %s", i, u.name)})
				}
				do(t, ctx, "send our own",
					typeInto(chromedp.CSS(`[data-testid="message-input"]`), "my own message, shown on my own background"),
					chromedp.Click(chromedp.CSS(`[data-testid="send-button"]`)),
				)
				poll(t, ctx, "every message shown", `document.querySelectorAll('[data-testid="message-list"] .msg[data-seq]').length === 11`)
				poll(t, ctx, "bob in the online list", `!!`+sel+`('[data-testid="online-users"] [data-user="bob"]')`)
				r := mustEval[layoutReport](t, ctx, checkLayout(c.width))
				screenshot(t, ctx, c.name+"-"+scheme+"-live")
				checkReport(t, "live", r)
				if c.mobile && r.HeaderHeight > float64(c.height)/4 {
					t.Errorf("the header takes %.0f of %d px once joined", r.HeaderHeight, c.height)
				}
				if r.TokenShown {
					t.Errorf("the token field is shown on an open node")
				}

				// Reconnecting: same layout, the status line is cut, not wrapped.
				record(t, ctx, "status")
				n.stop()
				poll(t, ctx, "reconnecting", sel+`('[data-testid="status"]').dataset.state === "reconnecting" && `+sel+`('[data-testid="status"]').textContent.includes("next try")`)
				r2 := mustEval[layoutReport](t, ctx, checkLayout(c.width))
				screenshot(t, ctx, c.name+"-"+scheme+"-reconnecting")
				checkReport(t, "reconnecting", r2)
				if r2.HeaderHeight != r.HeaderHeight || r2.MessagesTop != r.MessagesTop {
					t.Errorf("the layout moved while reconnecting: header %.1f -> %.1f px, messages at %.1f -> %.1f",
						r.HeaderHeight, r2.HeaderHeight, r.MessagesTop, r2.MessagesTop)
				}
			})
		}
	}
}

func checkReport(t *testing.T, when string, r layoutReport) {
	t.Helper()
	if r.ScrollWidth > r.Width || len(r.Overflowing) > 0 {
		t.Errorf("%s: the page is %.0f px wide in a %.0f px viewport; past the edge: %q", when, r.ScrollWidth, r.Width, r.Overflowing)
	}
	if !r.InputVisible || !r.SendVisible {
		t.Errorf("%s: message input visible %v, send button visible %v", when, r.InputVisible, r.SendVisible)
	}
	if !r.OnlineVisible {
		t.Errorf("%s: the online list is not visible", when)
	}
	if r.MinNameContrast < 4.5 {
		t.Errorf("%s: a user name has contrast %.2f:1 against its background, want at least 4.5:1", when, r.MinNameContrast)
	}
}
