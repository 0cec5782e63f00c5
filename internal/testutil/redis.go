// Package testutil holds fixtures shared by the tests of several packages.
package testutil

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// redisStartTimeout bounds how long a redis-server may take to answer PING.
const redisStartTimeout = 10 * time.Second

// RedisServer is a redis-server process started for a test, on a free
// loopback port, without persistence: a restart loses every key, as a
// production Redis without persistence would.
//
// When the REDIS_ADDR environment variable is set, the server at that
// address is used instead; Restart and Kill then skip the test, since they
// cannot act on it.
type RedisServer struct {
	tb       testing.TB
	addr     string
	external bool
	bin      string
	dir      string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// StartRedis starts a redis-server from PATH for tb (or uses REDIS_ADDR) and
// stops it in tb.Cleanup. It fails tb when redis-server is missing: the tests
// that need Redis are never skipped silently.
func StartRedis(tb testing.TB) *RedisServer {
	tb.Helper()
	if addr := os.Getenv("REDIS_ADDR"); addr != "" {
		return &RedisServer{tb: tb, addr: addr, external: true}
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("testutil: redis-server is not on PATH and REDIS_ADDR is unset: "+
			"install it (apt-get install redis-server) or point REDIS_ADDR at a Redis to use: %v", err)
	}
	s := &RedisServer{tb: tb, bin: bin, dir: tb.TempDir()}
	tb.Cleanup(s.Stop)
	// The free port may be taken between its probe and the server's bind:
	// try a few.
	var lastErr error
	for range 3 {
		s.addr = freeLoopbackAddr(tb)
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	tb.Fatalf("testutil: start redis-server: %v", lastErr)
	return nil
}

// Addr returns the server's host:port.
func (s *RedisServer) Addr() string { return s.addr }

// RequireOwn skips the test when the server is the shared one of
// REDIS_ADDR: for tests that act on every client of the server (CLIENT
// KILL, CLIENT PAUSE) and would disturb other tests and runs.
func (s *RedisServer) RequireOwn() {
	s.tb.Helper()
	if s.external {
		s.tb.Skip("testutil: REDIS_ADDR is set: this test needs a Redis of its own")
	}
}

// Stop terminates the server and waits for it to exit. It is safe to call
// more than once, and does nothing for an external server.
func (s *RedisServer) Stop() {
	s.signal(syscall.SIGTERM, 5*time.Second)
}

// Kill ends the server with SIGKILL, as a crash would, and waits for it to
// exit. It skips the test for an external server.
func (s *RedisServer) Kill() {
	s.tb.Helper()
	if s.external {
		s.tb.Skip("testutil: REDIS_ADDR is set: cannot kill an external Redis")
	}
	s.signal(syscall.SIGKILL, 0)
}

// Pause stops the server with SIGSTOP, as a stuck host would: connections
// stay open and nothing answers. Resume continues it (Stop does too). It
// skips the test for an external server.
func (s *RedisServer) Pause() {
	s.tb.Helper()
	s.signalRunning(syscall.SIGSTOP)
}

// Resume continues a server stopped by Pause.
func (s *RedisServer) Resume() {
	s.tb.Helper()
	s.signalRunning(syscall.SIGCONT)
}

func (s *RedisServer) signalRunning(sig syscall.Signal) {
	s.tb.Helper()
	if s.external {
		s.tb.Skip("testutil: REDIS_ADDR is set: cannot stop an external Redis")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Restart kills the server and starts a new one on the same port, with no
// data. It skips the test for an external server.
func (s *RedisServer) Restart() {
	s.tb.Helper()
	s.Kill()
	if err := s.start(); err != nil {
		s.tb.Fatalf("testutil: restart redis-server: %v", err)
	}
}

// signal sends sig to a running server and waits for it to exit; after
// grace it kills it. A zero grace waits without a fallback.
func (s *RedisServer) signal(sig syscall.Signal, grace time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // a Paused server handles no other signal
	_ = s.cmd.Process.Signal(sig)
	if grace > 0 {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-s.done:
		case <-t.C:
			_ = s.cmd.Process.Kill()
		}
	}
	<-s.done
	s.cmd = nil
}

// start runs redis-server on s.addr and waits until it answers PING.
func (s *RedisServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd, done, err := startRedisProcess(s.bin, s.dir, s.addr)
	if err != nil {
		return err
	}
	s.cmd, s.done = cmd, done
	return nil
}

// startRedisProcess runs bin (a redis-server) on addr with the tests'
// settings (loopback, no persistence, files in dir) plus extra, and waits
// until it answers as its own process. done is closed when it has exited.
func startRedisProcess(bin, dir, addr string, extra ...string) (cmd *exec.Cmd, done chan struct{}, err error) {
	_, port, _ := net.SplitHostPort(addr)
	args := append([]string{"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no"}, extra...)
	return startServerProcess(bin, dir, addr, args...)
}

// startServerProcess runs bin with args, a redis-server (or redis-sentinel)
// that will listen on addr, logging to a file in dir, and waits until it
// answers as its own process. done is closed when it has exited.
func startServerProcess(bin, dir, addr string, args ...string) (cmd *exec.Cmd, done chan struct{}, err error) {
	_, port, _ := net.SplitHostPort(addr)
	logPath := filepath.Join(dir, "redis-"+port+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	defer logFile.Close()
	cmd = exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	done = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.Now().Add(redisStartTimeout)
	for {
		switch err := pingRedis(addr, cmd.Process.Pid); {
		case err == nil:
			return cmd, done, nil
		case errors.Is(err, errNotOurs):
			_ = cmd.Process.Kill()
			<-done
			return nil, nil, err
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logPath)
			return nil, nil, fmt.Errorf("redis-server on %s exited at start: %s", addr, lastLines(string(log), 5))
		case <-time.After(20 * time.Millisecond): // poll interval, bounded by deadline
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return nil, nil, fmt.Errorf("redis-server on %s did not answer PING within %v", addr, redisStartTimeout)
		}
	}
}

// errNotOurs reports that a redis-server answers on the address, but not
// the process just started: two tests probed the same free port, and this
// one lost the bind.
var errNotOurs = errors.New("testutil: another redis-server answers on this port")

// pingRedis asks the server at addr for INFO server (inline protocol) and,
// when pid is not zero, checks that it is process pid.
func pingRedis(addr string, pid int) error {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("INFO server\r\n")); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	head, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if !strings.HasPrefix(head, "$") || err != nil {
		return fmt.Errorf("unexpected INFO reply %q", head)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return err
	}
	if pid != 0 && !strings.Contains(string(body), "process_id:"+strconv.Itoa(pid)+"\r\n") {
		return errNotOurs
	}
	return nil
}

// freeLoopbackAddr returns a loopback address whose port was free just now.
func freeLoopbackAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testutil: find a free port: %v", err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// UniquePrefix returns a key prefix that no other test (and no other run
// against a shared REDIS_ADDR) uses, for history.Keys and pubsub channels.
func UniquePrefix(tb testing.TB) string {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
			return r
		}
		return '_'
	}, tb.Name())
	return "test:" + name + ":" + hex.EncodeToString(b[:]) + ":"
}
