package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/node"
)

// TestOpenModeBindsLoopback: with no JWT key and no address given, both
// listeners are on 127.0.0.1; any address given (flag or environment), or
// a key, keeps the documented defaults.
func TestOpenModeBindsLoopback(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		args       []string
		env        map[string]string
		grpc, http string
		loopback   bool
	}{
		{"open, nothing given", nil, nil, "127.0.0.1:50051", "127.0.0.1:8080", true},
		{"open, -http-addr given", []string{"-http-addr", ":9000"}, nil, ":50051", ":9000", false},
		{"open, CHAT_GRPC_ADDR given", nil, map[string]string{"CHAT_GRPC_ADDR": ":6000"}, ":6000", ":8080", false},
		{"jwt", []string{"-jwt-secret", strings.Repeat("k", 32)}, nil, ":50051", ":8080", false},
		{"jwt from the environment", nil, map[string]string{"CHAT_JWT_JWKS": "/x.json"}, ":50051", ":8080", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := node.ParseConfig(c.args, func(k string) string { return c.env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.GRPCAddr != c.grpc || cfg.HTTPAddr != c.http || cfg.LoopbackOnly != c.loopback {
				t.Errorf("grpc %q http %q loopback %v; want %q %q %v", cfg.GRPCAddr, cfg.HTTPAddr, cfg.LoopbackOnly, c.grpc, c.http, c.loopback)
			}
		})
	}
}

// startLogged runs a node with args, logging to w, and returns once it
// serves; the node stops at the end of the test.
func startLogged(t *testing.T, w io.Writer, args ...string) node.Addrs {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan node.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- node.Run(ctx, append([]string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0"}, args...), func(string) string { return "" }, w, func(a node.Addrs) { ready <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node.Run: %v", err)
		}
	})
	select {
	case a := <-ready:
		return a
	case err := <-done:
		t.Fatalf("node.Run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("node not ready")
	}
	return node.Addrs{}
}

// TestStartupLine: the start-up line names the page's URL, the backend,
// the auth mode and the TLS mode; the log is JSON on a pipe.
func TestStartupLine(t *testing.T) {
	t.Parallel()
	buf := new(testutil.SyncBuffer)
	a := startLogged(t, buf)
	var line map[string]any
	for _, l := range strings.Split(buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "node started" {
			line = m
		}
	}
	if line == nil {
		t.Fatalf("no JSON start-up line in:\n%s", buf.String())
	}
	_, port, _ := strings.Cut(a.HTTP, ":")
	want := "http://localhost:" + port + "/"
	if line["page"] != want {
		t.Errorf("start-up line %v; want page %s", line, want)
	}
	if line["backend"] != "memory" || !strings.HasPrefix(line["auth"].(string), "open") || !strings.HasPrefix(line["tls"].(string), "off") {
		t.Errorf("start-up line %v; want backend memory, auth open, tls off", line)
	}
}

// TestLogFormat: text on a terminal (auto), JSON when asked even there,
// text when asked on a pipe.
func TestLogFormat(t *testing.T) {
	t.Parallel()
	t.Run("auto on a terminal is text", func(t *testing.T) {
		t.Parallel()
		ptmx, tty, err := pty.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer ptmx.Close()
		defer tty.Close()
		lines := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(ptmx)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		startLogged(t, tty)
		deadline := time.After(20 * time.Second)
		for {
			select {
			case l := <-lines:
				if strings.Contains(l, "node started") {
					if strings.HasPrefix(strings.TrimSpace(l), "{") || !strings.Contains(l, `msg="node started" page=http://localhost:`) || !strings.Contains(l, "backend=memory") {
						t.Fatalf("start-up line on a terminal is not text: %q", l)
					}
					return
				}
			case <-deadline:
				t.Fatal("no start-up line on the terminal")
			}
		}
	})
	t.Run("text on a pipe when asked", func(t *testing.T) {
		t.Parallel()
		buf := new(testutil.SyncBuffer)
		startLogged(t, buf, "-log-format", "text")
		if s := buf.String(); !strings.Contains(s, "level=INFO msg=\"node started") || strings.Contains(s, `{"time"`) {
			t.Fatalf("not text:\n%s", s)
		}
	})
	t.Run("bad format refused", func(t *testing.T) {
		t.Parallel()
		if _, err := node.ParseConfig([]string{"-log-format", "xml"}, func(string) string { return "" }, io.Discard); err == nil {
			t.Fatal("-log-format xml accepted")
		}
	})
}

// TestBinaryHelpAndVersion: the built binary's -h lists the subcommands and
// exits 0, as do help, version and a subcommand's -h; an unknown
// subcommand or flag exits non-zero.
func TestBinaryHelpAndVersion(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "node")
	if out, err := exec.Command("go", "build", "-o", bin, "example.com/chat/cmd/node").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), code
	}
	for _, args := range [][]string{{"-h"}, {"help"}} {
		out, code := run(args...)
		if code != 0 {
			t.Errorf("node %v exited %d", args, code)
		}
		for _, sub := range []string{"token", "certs", "healthcheck", "version", "-http-addr", "-log-format"} {
			if !strings.Contains(out, sub) {
				t.Errorf("node %v does not list %s:\n%s", args, sub, out)
			}
		}
	}
	for _, sub := range []string{"token", "certs", "healthcheck", "version"} {
		if _, code := run(sub, "-h"); code != 0 {
			t.Errorf("node %s -h exited %d", sub, code)
		}
	}
	out, code := run("version")
	if code != 0 || !strings.HasPrefix(out, "chat node ") || !strings.Contains(out, "module   example.com/chat") || !strings.Contains(out, "go       go1.") {
		t.Errorf("node version: exit %d\n%s", code, out)
	}
	if out, code := run("frobnicate"); code == 0 || !strings.Contains(out, "unknown subcommand") {
		t.Errorf("node frobnicate: exit %d\n%s", code, out)
	}
	if _, code := run("-no-such-flag"); code == 0 {
		t.Error("node -no-such-flag exited 0")
	}

	// go-redis's own notices go through the node's log (JSON on a pipe),
	// with flags given too (they used to be routed only without any).
	cmd := exec.Command(bin, "-redis-url", "redis://127.0.0.1:1/0", "-http-addr", "127.0.0.1:0", "-grpc-addr", "127.0.0.1:0")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stdout, stderr := new(testutil.SyncBuffer), new(testutil.SyncBuffer)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stdout.String(), `"msg":"go-redis"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no go-redis line in the node's JSON log:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(50 * time.Millisecond) // polling the process's output
	}
	if s := stderr.String(); strings.Contains(s, "redis:") {
		t.Errorf("go-redis wrote to stderr past the node's log:\n%s", s)
	}
}
