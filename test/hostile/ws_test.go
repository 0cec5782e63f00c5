package hostile_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"example.com/chat/api"
)

// TestWSDecodeErrorNonASCII is attack 1: a frame whose decode error quotes
// a long non-ASCII value. The error text used to be cut at byte 200 inside
// a "€", the error frame was invalid UTF-8, Frame.JSON panicked in the
// session writer and the node exited. Before and after the join, in open
// mode on memory and with a signed token on Redis.
func TestWSDecodeErrorNonASCII(t *testing.T) {
	t.Parallel()
	for _, m := range []mode{openMemory, jwtRedis} {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			p := startNode(t, nodeOpts{mode: m})
			room := newRoom()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for _, joined := range []bool{false, true} {
				w, _, err := dialWS(ctx, t, p, m.token(t, "mallory"), false)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				if joined {
					if err := w.send(ctx, &api.Message{User: "mallory", Room: room, Join: &api.Join{Events: true}}); err != nil {
						t.Fatal(err)
					}
					if err := w.waitLive(ctx); err != nil {
						t.Fatalf("attacker join: %v", err)
					}
				}
				// One, two or three ASCII bytes before the "€"s: whatever
				// the error's prefix, one of them puts byte 200 inside a
				// character.
				for _, lead := range []string{"x", "xx", "xxx"} {
					bad := `{"join":{"events":"` + lead + strings.Repeat("€", 80) + `"}}`
					if err := w.sendRaw(ctx, bad); err != nil {
						t.Fatalf("send the bad frame (joined %v): %v", joined, err)
					}
					// The answer is an error frame (valid UTF-8), or a close.
					rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
					b, err := w.recv(rctx)
					rcancel()
					if err != nil && p.running() {
						// A close may race the process's exit: look again.
						select {
						case <-p.exited:
						case <-time.After(500 * time.Millisecond):
						}
					}
					switch {
					case err != nil && !p.running():
						t.Fatalf("joined %v, lead %q: the node died on one frame (%v): %s", joined, lead, err, p.crash())
					case err != nil:
						t.Logf("joined %v, lead %q: connection ended: %s", joined, lead, closeDesc(err))
					case !utf8.Valid(b):
						t.Errorf("joined %v, lead %q: the error frame is not valid UTF-8: %q", joined, lead, b)
					case !strings.Contains(string(b), "error"):
						t.Errorf("joined %v, lead %q: answer %.300q is not an error frame", joined, lead, b)
					}
					if err != nil {
						break
					}
				}
				w.c.CloseNow()
				p.checkAlive(t)
			}
			checkChat(t, p, m, room)
			p.checkAlive(t)
		})
	}
}

// TestWSReplayHogs is attack 3: 32 WebSocket joins by one user (one token
// in JWT mode, one name in open mode) replaying a big history (100
// messages of 16 KB of control characters, ~10 MB in JSON) that never
// read. Each join used to build its own copy of the replay: 1.1 GB.
func TestWSReplayHogs(t *testing.T) {
	t.Parallel()
	for _, m := range []mode{openMemory, jwtRedis} {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			p := startNode(t, nodeOpts{mode: m, args: []string{
				"-send-rate", "100000", "-conn-rate-per-ip", "0", "-write-timeout", "3s",
			}})
			room := newRoom()
			seedHistory(t, p, m, room, 100, 16000)
			base := p.rss()
			w := p.watchRSS(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tok := m.token(t, "hog")
			var hogs []*wsConn
			for i := range 32 {
				h, resp, err := dialWS(ctx, t, p, tok, true)
				if err != nil {
					status := 0
					if resp != nil {
						status = resp.StatusCode
					}
					t.Logf("hog %d refused: %v (HTTP %d)", i, err, status)
					continue
				}
				if err := h.send(ctx, &api.Message{User: "hog", Room: room, Join: &api.Join{Events: true, History: 100}}); err != nil {
					t.Logf("hog %d join: %v", i, err)
				}
				hogs = append(hogs, h)
			}
			// Hold them unread for a few seconds, sampling RSS.
			hold := time.NewTimer(5 * time.Second)
			select {
			case <-hold.C:
			case <-p.exited:
				hold.Stop()
			}
			peak := w.Peak()
			t.Logf("%d hogs connected", len(hogs))
			p.checkAlive(t)
			checkChat(t, p, m, room)
			// 32 shared 4 MiB replays (each JSON text frame) plus buffers:
			// 200 MiB is ample; the per-join copies went past 1 GB.
			checkRSS(t, "with 32 unread replays", base, peak, 200*mib)
			for _, h := range hogs {
				h.c.CloseNow()
			}
		})
	}
}

// TestWSNeverJoined is attack 7: WebSockets that never send their first
// frame used to stay open forever, counted against nothing, and were not
// closed on drain. Now they are closed at -join-timeout (1 s here),
// counted against -max-streams, and closed (with a close frame) on drain.
func TestWSNeverJoined(t *testing.T) {
	t.Parallel()
	t.Run("join-timeout-and-max-streams", func(t *testing.T) {
		t.Parallel()
		const limit = 3
		p := startNode(t, nodeOpts{mode: openMemory, args: []string{
			"-join-timeout", "1s", "-max-streams", "3", "-conn-rate-per-ip", "0",
		}})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		idle := make([]*wsConn, 0, limit)
		for i := range limit {
			w, resp, err := dialWS(ctx, t, p, "", false)
			if err != nil {
				t.Fatalf("never-joined connection %d of %d refused (%v, %v); want it admitted", i+1, limit, err, resp)
			}
			idle = append(idle, w)
		}
		// The limit+1th: refused at the upgrade (503), or closed at once
		// (1013 try again later).
		w, resp, err := dialWS(ctx, t, p, "", false)
		switch {
		case err != nil && resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
			t.Logf("connection %d refused: HTTP %d", limit+1, resp.StatusCode)
		case err != nil:
			t.Errorf("connection %d refused unclearly: %v (%v); want HTTP 503", limit+1, err, resp)
		default:
			rerr := w.readUntilClosed(500 * time.Millisecond)
			if websocket.CloseStatus(rerr) != websocket.StatusTryAgainLater {
				t.Errorf("with %d never-joined connections held and -max-streams %d, connection %d was accepted (then: %v); want HTTP 503 or close 1013: never-joined connections are not counted",
					limit, limit, limit+1, rerr)
			}
		}
		// Every never-joined one is closed at the join timeout.
		var wg sync.WaitGroup
		ended := make([]time.Duration, len(idle))
		errs := make([]error, len(idle))
		for i, w := range idle {
			wg.Go(func() {
				errs[i] = w.readUntilClosed(6 * time.Second)
				ended[i] = time.Since(start)
			})
		}
		wg.Wait()
		for i := range idle {
			if errs[i] == nil {
				t.Errorf("never-joined connection %d still open %v after it connected (-join-timeout 1s)", i+1, ended[i].Round(time.Millisecond))
			} else {
				t.Logf("never-joined connection %d ended after %v: %s", i+1, ended[i].Round(time.Millisecond), closeDesc(errs[i]))
			}
		}
		p.checkAlive(t)
		checkChat(t, p, openMemory, newRoom())
	})
	t.Run("drain", func(t *testing.T) {
		t.Parallel()
		p := startNode(t, nodeOpts{mode: openMemory, args: []string{
			"-join-timeout", "30s", "-drain-spread", "100ms", "-conn-rate-per-ip", "0",
		}})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var idle []*wsConn
		for i := range 5 {
			w, _, err := dialWS(ctx, t, p, "", false)
			if err != nil {
				t.Fatalf("never-joined connection %d: %v", i+1, err)
			}
			idle = append(idle, w)
		}
		// Read (and so answer the close handshake) from before the SIGTERM.
		var wg sync.WaitGroup
		errs := make([]error, len(idle))
		ended := make([]time.Duration, len(idle))
		sigterm := time.Now()
		for i, w := range idle {
			wg.Go(func() {
				errs[i] = w.readUntilClosed(6 * time.Second)
				ended[i] = time.Since(sigterm)
			})
		}
		p.stop(20 * time.Second)
		stopped := time.Since(sigterm)
		wg.Wait()
		t.Logf("node stopped %v after SIGTERM", stopped.Round(time.Millisecond))
		for i, err := range errs {
			var ce websocket.CloseError
			switch {
			case err == nil:
				t.Errorf("never-joined connection %d still open %v after the node's SIGTERM", i+1, ended[i].Round(time.Millisecond))
			case !errors.As(err, &ce):
				t.Errorf("never-joined connection %d: the node exited without closing it (%v, %v after SIGTERM); want a close frame on drain", i+1, err, ended[i].Round(time.Millisecond))
			case ended[i] > 3*time.Second:
				t.Errorf("never-joined connection %d closed %v after SIGTERM (%s); want within 3s", i+1, ended[i].Round(time.Millisecond), closeDesc(err))
			default:
				t.Logf("never-joined connection %d closed on drain after %v: %s", i+1, ended[i].Round(time.Millisecond), closeDesc(err))
			}
		}
	})
}
