package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"example.com/chat/api"
)

// rawHTTP sends head (a request line and headers, without the blank line)
// and body on a new TCP connection, then reads the response, waiting at
// most wait. The connection is returned for tests that continue on it.
func rawHTTP(t *testing.T, addr, head, body string, wait time.Duration) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, head+"\r\n\r\n"+body); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no response within %v: %v", wait, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// gatewayError decodes the gateway's JSON error shape.
func gatewayError(t *testing.T, body string) (code int, msg string) {
	t.Helper()
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Message == "" {
		t.Fatalf("not the gateway's error shape: %q (%v)", body, err)
	}
	return e.Code, e.Message
}

// TestRESTTokenBeforeBody: on a JWT node, a POST without a valid token is
// refused before its body is read, however large the body claims to be.
func TestRESTTokenBeforeBody(t *testing.T) {
	t.Parallel()
	a := start(t, hsNodeFlags()...)
	for _, tc := range []struct{ name, auth, msg string }{
		{"no token", "", "auth: missing token"},
		{"bad token", "\r\nAuthorization: Bearer not-a-jwt", "auth:"},
		{"expired", "\r\nAuthorization: Bearer " + mint(t, "eve", nil, -time.Hour), "auth: token expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// 50 MB announced, one byte sent: an answer proves the body
			// was not waited for.
			resp, body := rawHTTP(t, a.HTTP, "POST /v1/rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 52428800"+tc.auth, "{", 5*time.Second)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d %q, want 401", resp.StatusCode, body)
			}
			if _, msg := gatewayError(t, body); !strings.Contains(msg, tc.msg) {
				t.Fatalf("message %q, want %q", msg, tc.msg)
			}
			if resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	t.Run("valid token reaches the gateway", func(t *testing.T) {
		t.Parallel()
		code, body := rest(t, http.DefaultClient, http.MethodPost, "http://"+a.HTTP+"/v1/rooms/lobby/messages", mint(t, "ann", nil, time.Hour), `{"text":"hi"}`)
		if code != http.StatusOK {
			t.Fatalf("status %d %q", code, body)
		}
	})
}

// TestRESTBodyLimit: a body over -max-body-bytes is refused with 413 in
// the gateway's error shape, whether it says so up front or not.
func TestRESTBodyLimit(t *testing.T) {
	t.Parallel()
	a := start(t, "-max-body-bytes", "1024")
	big := `{"user":"u","text":"` + strings.Repeat("x", 2000) + `"}`
	for _, tc := range []struct{ name, head, body string }{
		{"content-length", fmt.Sprintf("Content-Length: %d", len(big)), big},
		{"announced only", "Content-Length: 52428800", "{"},
		{"chunked", "Transfer-Encoding: chunked", fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(big), big)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, body := rawHTTP(t, a.HTTP, "POST /v1/rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+tc.head, tc.body, 5*time.Second)
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d %q, want 413", resp.StatusCode, body)
			}
			if _, msg := gatewayError(t, body); !strings.Contains(msg, "1024") {
				t.Fatalf("message %q does not state the limit", msg)
			}
		})
	}
	t.Run("under the limit", func(t *testing.T) {
		t.Parallel()
		code, body := rest(t, http.DefaultClient, http.MethodPost, "http://"+a.HTTP+"/v1/rooms/lobby/messages", "", `{"user":"u","text":"`+strings.Repeat("x", 900)+`"}`)
		if code != http.StatusOK {
			t.Fatalf("status %d %q", code, body)
		}
	})
}

// TestRESTSlowBody: a REST body that stalls is cut at -http-read-timeout.
func TestRESTSlowBody(t *testing.T) {
	t.Parallel()
	a := start(t, "-http-read-timeout", "300ms")
	c, err := net.DialTimeout("tcp", a.HTTP, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /v1/rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"te")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	// The node answers (400: the body ended early) or closes; either way
	// within the read timeout, not never.
	_, err = io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a stalled body held the connection past the read timeout")
	}
}

// TestIdleKeepAliveClosed: an idle keep-alive connection is closed at
// -http-idle-timeout, and one that never finishes its headers at
// -http-read-header-timeout.
func TestIdleKeepAliveClosed(t *testing.T) {
	t.Parallel()
	a := start(t, "-http-idle-timeout", "300ms", "-http-read-header-timeout", "300ms")
	for _, tc := range []struct{ name, send string }{
		{"idle after a request", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"headers never end", "GET /healthz HTTP/1.1\r\nHost: x\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.DialTimeout("tcp", a.HTTP, testTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tc.send)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Fatalf("connection not closed by the node: %v", err)
			}
		})
	}
}

// TestMaxHeaderBytes: a header block over -max-header-bytes gets 431.
func TestMaxHeaderBytes(t *testing.T) {
	t.Parallel()
	a := start(t, "-max-header-bytes", "2048")
	resp, _ := rawHTTP(t, a.HTTP, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 64<<10), "", 5*time.Second)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
}

// TestWebSocketOutlivesHTTPTimeouts: the REST read and write deadlines do
// not apply to WebSockets, which live as long as they are used.
func TestWebSocketOutlivesHTTPTimeouts(t *testing.T) {
	t.Parallel()
	const short = 200 * time.Millisecond
	a := start(t, "-http-read-timeout", short.String(), "-http-write-timeout", short.String(),
		"-http-idle-timeout", short.String(), "-http-read-header-timeout", short.String())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, _, err := websocket.Dial(ctx, wsURL(a, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	wsWrite(t, ctx, c, `{"user":"w","join":{"events":true,"noHistory":true}}`)
	wsUntilLive(t, ctx, c)
	// What is tested is that time passes: well past every HTTP timeout.
	time.Sleep(5 * short)
	wsWrite(t, ctx, c, `{"text":"still here","clientId":"c1"}`)
	for {
		m, raw := wsRead(t, ctx, c)
		if m.GetKind() == api.Kind_KIND_ACK {
			break
		}
		if m.GetError() != nil {
			t.Fatalf("got %s", raw)
		}
	}
}

// TestRESTWriteDeadline: a REST answer the client does not read is cut
// at -http-write-timeout instead of holding the connection and its
// buffers.
func TestRESTWriteDeadline(t *testing.T) {
	t.Parallel()
	a := start(t, "-http-write-timeout", "300ms", "-send-rate", "100000", "-history-size", "400", "-max-replay-bytes", "16777216")
	text := strings.Repeat("x", 15000)
	for i := range 400 {
		if code, body := rest(t, http.DefaultClient, http.MethodPost, "http://"+a.HTTP+"/v1/rooms/big/messages", "", `{"user":"u","text":"`+text+`"}`); code != http.StatusOK {
			t.Fatalf("post %d: %d %q", i, code, body)
		}
	}
	// A small receive window: the answer (about 6 MB) cannot sit in
	// the socket buffers.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", a.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /v1/rooms/big/messages HTTP/1.1\r\nHost: x\r\n\r\n")
	// What is tested is that time passes without reading.
	time.Sleep(time.Second)
	c.SetReadDeadline(time.Now().Add(testTimeout))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return // cut before the headers even left
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil {
		t.Fatalf("the whole answer (%d bytes) arrived after the write timeout", n)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the answer neither finished nor was cut")
	}
}
