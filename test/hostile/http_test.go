package hostile_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawHTTP opens a TCP connection to p's HTTP listener (closed at cleanup).
func rawHTTP(t testing.TB, p *proc, small bool) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if small {
		d = smallBufDialer
	}
	c, err := d.Dial("tcp", p.HTTP)
	if err != nil {
		t.Fatalf("dial %s: %v", p.HTTP, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// serverClosed reports whether the node has closed its end of c, from the
// kernel's socket table (/proc/net/tcp: the node's socket is no longer
// ESTABLISHED, or gone), without reading from c: an answer stuck behind a
// client that does not read holds the node's FIN behind it, so the
// client's own socket would not tell.
func serverClosed(c net.Conn) bool {
	local := c.LocalAddr().(*net.TCPAddr)
	remote := c.RemoteAddr().(*net.TCPAddr)
	srv := fmt.Sprintf("0100007F:%04X", remote.Port)
	cli := fmt.Sprintf("0100007F:%04X", local.Port)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == srv && f[2] == cli {
			return f[3] != "01" // ESTABLISHED
		}
	}
	return true
}

// drainUntilClosed reads c until the server closes it or d passes: it
// returns the bytes read and whether it was closed (EOF or reset).
func drainUntilClosed(c net.Conn, d time.Duration) (int64, bool) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return n, false
	}
	return n, true
}

// TestRESTNeverRead is attack 2: 30 REST GETs of a history full of control
// characters (~10 MB of JSON each) that never read the response. With no
// write timeout they held 844 MB for over 45 s. Now -http-write-timeout
// (2 s here) closes them, and the memory is given back: RSS must fall
// under the bound within 6 s of the last close, with GOMEMLIMIT=96MiB so
// that the runtime returns freed memory promptly (memory still held stays resident
// whatever the limit). The peak, while the responses are being built, is
// only logged: a write timeout cannot bound it.
func TestRESTNeverRead(t *testing.T) {
	t.Parallel()
	// One mode only: building the 30 answers is the package's heaviest
	// CPU load, and the HTTP layer under attack is the same in all modes.
	testRESTNeverRead(t, openMemory)
}

func testRESTNeverRead(t *testing.T, m mode) {
	const conns = 30
	auth := ""
	if m.jwt {
		auth = "Authorization: Bearer " + m.token(t, "reader") + "\r\n"
	}
	p := startNode(t, nodeOpts{mode: m, args: []string{
		"-send-rate", "100000", "-conn-rate-per-ip", "0", "-http-write-timeout", "2s", "-http-idle-timeout", "1s",
	}, env: []string{"GOMEMLIMIT=96MiB"}})
	room := newRoom()
	seedHistory(t, p, m, room, 100, 16000)
	base := p.rss()
	w := p.watchRSS(t)
	start := time.Now()
	cs := make([]net.Conn, conns)
	for i := range cs {
		cs[i] = rawHTTP(t, p, true)
		if _, err := fmt.Fprintf(cs[i], "GET /v1/rooms/%s/messages?limit=100 HTTP/1.1\r\nHost: chat\r\n%s\r\n", room, auth); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	// Every connection is closed by the node: cut by its write deadline,
	// or, when the kernel took the whole answer (a 4 MiB one can fit in
	// the socket buffers: no memory of the node's then), at the idle
	// timeout after it. Seen from the kernel's socket table, without
	// reading (a read would let the write finish).
	var open []int
	for {
		open = open[:0]
		for i, c := range cs {
			if !serverClosed(c) {
				open = append(open, i)
			}
		}
		// Building the answers takes seconds on a loaded machine; the
		// write deadline only bites at the first write after it.
		if len(open) == 0 || time.Since(start) > 30*time.Second || !p.running() {
			break
		}
		time.Sleep(100 * time.Millisecond) // poll interval, bounded by the 30 s
	}
	cut := time.Since(start)
	if len(open) > 0 {
		// What did it get? (Reading now lets its write go on.)
		c := cs[open[0]]
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		head := make([]byte, 300)
		n, _ := io.ReadFull(c, head)
		t.Errorf("%d of %d unread GETs still open %v after the requests (-http-write-timeout 2s), e.g. GET %d, whose answer starts %q", len(open), conns, cut.Round(time.Second), open[0], head[:n])
	} else {
		t.Logf("all %d unread GETs cut by the node within %v", conns, cut.Round(time.Millisecond))
	}
	// Then the memory is given back: RSS falls under the bound within 6 s.
	// Memory still held never does.
	const allowance = 110 * mib
	var after int64
	cutAt := time.Now()
	for deadline := cutAt.Add(6 * time.Second); time.Now().Before(deadline) && p.running(); {
		if after = p.rss(); after <= base+allowance {
			break
		}
		time.Sleep(100 * time.Millisecond) // RSS sampling, bounded by deadline
	}
	t.Logf("RSS %d MiB %v after the cut", after/mib, time.Since(cutAt).Round(time.Millisecond))
	peak := w.Peak()
	p.checkAlive(t)
	t.Logf("RSS peak while the 30 responses were pending: %d MiB (baseline %d MiB)", peak/mib, base/mib)
	// The old node held 330-850 MB for as long as the clients did not read.
	checkRSS(t, "within 6s of the cut of the 30 unread GETs (or of 30s)", base, after, allowance)
	checkChat(t, p, m, room)
}

// TestBigBodies is attack 5: four 50 MB POSTs. Without a token to a JWT
// node they used to be decoded in full before the token was checked
// (31 MB -> 852 MB RSS); now the answer is 401 before the body is read.
// In open mode a body over -max-body-bytes (262144 by default) gets 413.
func TestBigBodies(t *testing.T) {
	t.Parallel()
	const size = 50 << 20
	for _, tc := range []struct {
		m    mode
		want int
	}{{jwtMemory, http.StatusUnauthorized}, {openMemory, http.StatusRequestEntityTooLarge}} {
		t.Run(tc.m.name, func(t *testing.T) {
			t.Parallel()
			p := startNode(t, nodeOpts{mode: tc.m, args: []string{"-conn-rate-per-ip", "0"}})
			room := newRoom()
			base := p.rss()
			w := p.watchRSS(t)
			if tc.m.jwt {
				// Headers only: the answer must come before the body.
				c := rawHTTP(t, p, false)
				fmt.Fprintf(c, "POST /v1/rooms/%s/messages HTTP/1.1\r\nHost: chat\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", room, size)
				_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					t.Errorf("no answer within 3s to a token-less POST before its body was sent (%v): the body is read before the token is checked", err)
				} else if !strings.Contains(line, "401") {
					t.Errorf("token-less POST, before the body: %q, want 401", strings.TrimSpace(line))
				}
				c.Close()
			}
			var wg sync.WaitGroup
			codes := make([]string, 4)
			for i := range codes {
				wg.Go(func() { codes[i] = postBody(p, room, size) })
			}
			wg.Wait()
			peak := w.end()
			for i, got := range codes {
				if got != fmt.Sprint(tc.want) {
					t.Errorf("50 MB POST %d: %s, want %d", i, got, tc.want)
				}
			}
			p.checkAlive(t)
			checkRSS(t, "over four 50 MB POSTs", base, peak, 48*mib)
			checkChat(t, p, tc.m, room)
		})
	}
}

// postBody POSTs size bytes of a JSON message (a huge text) to room over a
// raw connection, reading the answer while the body is still being
// written (a node that answers early and closes would otherwise make the
// client see only the reset), and returns the status code or the error.
func postBody(p *proc, room string, size int) string {
	c, err := net.DialTimeout("tcp", p.HTTP, 5*time.Second)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		const head, tail = `{"text":"`, `"}`
		if _, err := fmt.Fprintf(c, "POST /v1/rooms/%s/messages HTTP/1.1\r\nHost: chat\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", room, size, head); err != nil {
			return
		}
		chunk := []byte(strings.Repeat("a", 64<<10))
		for left := size - len(head) - len(tail); left > 0; left -= len(chunk) {
			if _, err := c.Write(chunk[:min(left, len(chunk))]); err != nil {
				return
			}
		}
		_, _ = io.WriteString(c, tail)
	}()
	defer func() { c.Close(); <-wdone }()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "no answer: " + err.Error()
	}
	if f := strings.Fields(line); len(f) >= 2 {
		return f[1]
	}
	return fmt.Sprintf("bad status line %q", line)
}

// TestSlowHTTPClients is attack 9: idle keep-alives and slowloris headers
// and bodies used to be held (no IdleTimeout, no ReadTimeout; headers had
// 10 s). Now -http-idle-timeout, -http-read-header-timeout and
// -http-read-timeout close them (1 s, 1 s, 2 s here).
func TestSlowHTTPClients(t *testing.T) {
	t.Parallel()
	p := startNode(t, nodeOpts{mode: openMemory, args: []string{"-conn-rate-per-ip", "0",
		"-http-idle-timeout", "1s", "-http-read-header-timeout", "1s", "-http-read-timeout", "2s"}})
	room := newRoom()
	cases := []struct {
		name  string
		bound time.Duration
		first string // sent at once
		drip  string // then one byte every 200 ms
	}{
		{"idle-keepalive", 3 * time.Second, "GET /healthz HTTP/1.1\r\nHost: chat\r\n\r\n", ""},
		{"slow-headers", 3 * time.Second, "GET /healthz HTTP/1.1\r\nHost: chat\r\n", strings.Repeat("X-Slow: y\r\n", 20)},
		{"slow-body", 4 * time.Second, "POST /v1/rooms/" + room + "/messages HTTP/1.1\r\nHost: chat\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n", `{"user":"slow","text":"` + strings.Repeat("z", 170)},
	}
	var wg sync.WaitGroup
	for _, tc := range cases {
		wg.Go(func() {
			c := rawHTTP(t, p, false)
			start := time.Now()
			if _, err := io.WriteString(c, tc.first); err != nil {
				t.Errorf("%s: %v", tc.name, err)
				return
			}
			closed := make(chan time.Duration, 1)
			go func() {
				_, ok := drainUntilClosed(c, tc.bound+2*time.Second)
				if ok {
					closed <- time.Since(start)
				}
				close(closed)
			}()
			tk := time.NewTicker(200 * time.Millisecond)
			defer tk.Stop()
			for i := 0; ; i++ {
				select {
				case d, ok := <-closed:
					if !ok {
						t.Errorf("%s: connection still open %v after it started (bound %v)", tc.name, time.Since(start).Round(time.Millisecond), tc.bound)
					} else if d > tc.bound {
						t.Errorf("%s: closed after %v, over the bound %v", tc.name, d.Round(time.Millisecond), tc.bound)
					} else {
						t.Logf("%s: closed by the node after %v", tc.name, d.Round(time.Millisecond))
					}
					return
				case <-tk.C:
					if i < len(tc.drip) {
						_, _ = c.Write([]byte{tc.drip[i]})
					}
				}
			}
		})
	}
	wg.Wait()
	p.checkAlive(t)
	checkChat(t, p, openMemory, room)
}

// TestMetricsToken is from attack 12: with -metrics-token, /metrics needs
// the bearer (it used to be open, in JWT mode too).
func TestMetricsToken(t *testing.T) {
	t.Parallel()
	const tok = "metrics-bearer-for-the-test"
	p := startNode(t, nodeOpts{mode: jwtMemory, args: []string{"-metrics-token", tok}})
	get := func(auth string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.HTTP+"/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	for _, a := range []string{"", "Bearer wrong", "Bearer " + mint(t, "someone", time.Hour)} {
		if got := get(a); got != http.StatusUnauthorized && got != http.StatusForbidden {
			t.Errorf("GET /metrics with Authorization %.20q: %d, want 401 or 403", a, got)
		}
	}
	if got := get("Bearer " + tok); got != http.StatusOK {
		t.Errorf("GET /metrics with the metrics bearer: %d, want 200", got)
	}
}
