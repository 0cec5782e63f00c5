package hostile_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/auth"
)

// secret is the HS256 secret of the JWT-mode nodes.
const secret = "hostile-test-secret-0123456789abcdef"

// mode is how a node is run: open (the first frame names the user) or
// JWT (HS256 tokens signed with secret), on the in-memory backend or on a
// real redis-server of the test's own.
type mode struct {
	name  string
	jwt   bool
	redis bool
}

var (
	openMemory = mode{name: "open-memory"}
	jwtRedis   = mode{name: "jwt-redis", jwt: true, redis: true}
	jwtMemory  = mode{name: "jwt-memory", jwt: true}
	openRedis  = mode{name: "open-redis", redis: true}
)

// token returns a token for user in JWT mode, "" in open mode.
func (m mode) token(t testing.TB, user string) string {
	t.Helper()
	if !m.jwt {
		return ""
	}
	return mint(t, user, time.Hour)
}

// mint signs an HS256 token for user valid for ttl (negative: expired).
func mint(t testing.TB, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Mint([]byte(secret), user, nil, ttl, "", "")
	if err != nil {
		t.Fatalf("mint token: %v", err)
	}
	return tok
}

// newFlags are the flags issue 11 adds; HOSTILE_OLD_FLAGS=1 drops them
// (with their values) from the nodes' command lines.
var newFlags = []string{
	"-join-timeout", "-max-invalid-frames", "-write-timeout", "-flush-timeout",
	"-http-read-header-timeout", "-http-read-timeout", "-http-write-timeout",
	"-http-idle-timeout", "-max-header-bytes", "-max-body-bytes",
	"-grpc-max-streams-per-conn", "-grpc-max-header-bytes", "-metrics-token",
	"-metrics-addr", "-conn-rate-per-ip", "-conn-burst-per-ip", "-max-replay-bytes",
}

func dropNewFlags(args []string) []string {
	if os.Getenv("HOSTILE_OLD_FLAGS") != "1" {
		return args
	}
	var out []string
	for i := 0; i < len(args); i++ {
		if slices.Contains(newFlags, args[i]) {
			i++ // and its value
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// proc is a running cmd/node process.
type proc struct {
	t      testing.TB
	id     string
	HTTP   string
	GRPC   string
	cmd    *exec.Cmd
	logs   *testutil.TailBuffer // stdout: JSON log lines
	stderr *testutil.TailBuffer
	exited chan struct{}
}

// nodeOpts configures startNode.
type nodeOpts struct {
	mode  mode
	redis *testutil.RedisServer // nil with mode.redis: a new one
	id    string                // -node-id; empty: from the test name
	args  []string              // extra flags, last (they win)
	env   []string              // extra environment
}

// startNode runs a node process on loopback ports and waits until it
// serves; it fails the test with the node's stderr when the node exits
// first (an unknown flag shows as "flag provided but not defined"). At
// cleanup it is stopped with SIGTERM (SIGKILL after 20 s).
func startNode(t testing.TB, o nodeOpts) *proc {
	t.Helper()
	p, err := launchNode(t, o)
	if err != nil {
		t.Fatalf("node did not start: %v", err)
	}
	return p
}

// launchNode is startNode returning the start failure instead.
func launchNode(t testing.TB, o nodeOpts) (*proc, error) {
	t.Helper()
	bin := buildNode(t)
	if o.id == "" {
		o.id = strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	}
	args := []string{
		"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0",
		"-node-id", o.id, "-log-level", "info", "-shutdown-timeout", "5s",
		"-ws-ping-interval", "5s",
	}
	if o.mode.redis {
		if o.redis == nil {
			o.redis = testutil.StartRedis(t)
		}
		args = append(args, "-redis-url", "redis://"+o.redis.Addr()+"/0")
	}
	if o.mode.jwt {
		args = append(args, "-jwt-secret", secret)
	}
	args = dropNewFlags(append(args, o.args...))
	p := &proc{t: t, id: o.id, logs: &testutil.TailBuffer{Max: 32 << 10}, stderr: &testutil.TailBuffer{Max: 32 << 10}, exited: make(chan struct{})}
	started := make(chan [2]string, 1)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), o.env...)
	p.cmd.Stdout = &testutil.LineWriter{W: p.logs, Line: func(b []byte) {
		var l struct{ Msg, GRPC, HTTP string }
		if json.Unmarshal(b, &l) == nil && l.Msg == "node started" {
			select {
			case started <- [2]string{l.GRPC, l.HTTP}:
			default:
			}
		}
	}}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start node %s: %w", o.id, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		stopping := time.Now()
		p.stop(20 * time.Second)
		if d := time.Since(stopping); d > 3*time.Second {
			t.Logf("node %s took %v to stop after SIGTERM", o.id, d.Round(time.Millisecond))
		}
		if t.Failed() {
			t.Logf("node %s %v\nstdout (tail):\n%s\nstderr (tail):\n%s", o.id, args, p.logs, p.stderr)
		}
	})
	select {
	case a := <-started:
		p.GRPC, p.HTTP = a[0], a[1]
		return p, nil
	case <-p.exited:
		return p, fmt.Errorf("node %s exited at start (%v): %s%s", o.id, p.cmd.ProcessState, p.stderr, lastLines(p.logs.String(), 3))
	case <-time.After(20 * time.Second):
		return p, fmt.Errorf("node %s did not start within 20s", o.id)
	}
}

// stop sends SIGTERM and waits up to grace for the exit, then kills.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.t.Errorf("node %s did not stop within %v of SIGTERM", p.id, grace)
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// kill ends the node with SIGKILL and waits for it.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// running reports whether the process has not exited.
func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// checkAlive fails the test unless the node still runs and its /healthz
// answers 200 (what makes assertion (a) of every attack).
func (p *proc) checkAlive(t testing.TB) {
	t.Helper()
	if !p.running() {
		t.Fatalf("node %s is dead: it exited (%v): %s", p.id, p.cmd.ProcessState, p.crash())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTP+"/healthz", nil)
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("node %s: GET /healthz: %v (process running: %v)", p.id, err, p.running())
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("node %s: GET /healthz: %s, want 200", p.id, resp.Status)
	}
}

// crash returns the panic line of the node's stderr, or its last lines.
func (p *proc) crash() string {
	s := p.stderr.String()
	if i := strings.Index(s, "panic: "); i >= 0 {
		line, _, _ := strings.Cut(s[i:], "\n")
		return line
	}
	return lastLines(s, 5)
}

// rss returns the process's resident set size in bytes (VmRSS), or 0 when
// it has exited.
func (p *proc) rss() int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// hardRSS is the resident size past which a watched node is killed, to
// protect the (shared) machine from an attack that works.
const hardRSS = 3 << 30

// rssWatch samples a node's RSS every 50 ms and keeps the peak.
type rssWatch struct {
	p    *proc
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	peak int64
}

// watchRSS starts sampling p's RSS until the returned watch's end is
// called (at cleanup at the latest).
func (p *proc) watchRSS(t testing.TB) *rssWatch {
	w := &rssWatch{p: p, stop: make(chan struct{}), done: make(chan struct{}), peak: p.rss()}
	go func() {
		defer close(w.done)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tk.C:
			}
			r := p.rss()
			w.mu.Lock()
			w.peak = max(w.peak, r)
			w.mu.Unlock()
			if r > hardRSS {
				_ = p.cmd.Process.Kill()
				return
			}
		}
	}()
	t.Cleanup(func() { w.end() })
	return w
}

// end stops sampling and returns the peak.
func (w *rssWatch) end() int64 {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak
}

// Peak returns the peak so far.
func (w *rssWatch) Peak() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return max(w.peak, w.p.rss())
}

const mib = 1 << 20

// checkRSS fails the test when got exceeds baseline+allowance, saying
// what was measured.
func checkRSS(t testing.TB, what string, baseline, got, allowance int64) {
	t.Helper()
	t.Logf("RSS %s: baseline %d MiB, measured %d MiB, bound %d MiB", what, baseline/mib, got/mib, (baseline+allowance)/mib)
	if got > baseline+allowance {
		t.Errorf("RSS %s: %d MiB, over the bound of baseline %d MiB + %d MiB", what, got/mib, baseline/mib, allowance/mib)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
