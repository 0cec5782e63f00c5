package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// sentinelTimeout bounds every wait of the Sentinel fixture: start,
// discovery, a failover.
const sentinelTimeout = 30 * time.Second

// SentinelMaster is the master name the Sentinel fixture monitors.
const SentinelMaster = "mymaster"

// Sentinel is a Redis master, its replicas and three redis-sentinel
// processes watching it (quorum 2, down-after-milliseconds 1000,
// failover-timeout 5000), started for a test on free loopback ports,
// without persistence. Everything is stopped at cleanup.
type Sentinel struct {
	tb  testing.TB
	bin string
	dir string

	mu        sync.Mutex
	data      []*redisProc // the first master, then the replicas
	sentinels []*redisProc
	clients   map[string]*redis.Client
	sclients  map[string]*redis.SentinelClient
}

// redisProc is one redis-server or redis-sentinel process.
type redisProc struct {
	addr   string
	cmd    *exec.Cmd
	done   chan struct{} // closed when cmd has exited
	killed bool
	paused bool
}

// StartSentinel starts a master with replicas replicas and three
// sentinels, waits until every replica is in sync and every sentinel knows
// the replicas and the other sentinels, and stops them all at cleanup. It
// fails tb when redis-server is missing.
func StartSentinel(tb testing.TB, replicas int) *Sentinel {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("testutil: redis-server is not on PATH: install it (apt-get install redis-server): %v", err)
	}
	s := &Sentinel{tb: tb, bin: bin, dir: tb.TempDir()}
	tb.Cleanup(s.stopAll)
	master := s.startData(tb, "")
	for range replicas {
		s.startData(tb, master.addr)
	}
	for range 3 {
		s.startSentinel(tb, master.addr)
	}
	s.eventually(func() error { return s.converged(master.addr, replicas) })
	return s
}

// startData starts a redis-server, a replica of master unless it is "".
func (s *Sentinel) startData(tb testing.TB, master string) *redisProc {
	tb.Helper()
	var extra []string
	if master != "" {
		host, port, _ := net.SplitHostPort(master)
		extra = []string{"--replicaof", host, port}
	}
	extra = append(extra, "--repl-diskless-sync-delay", "0")
	var lastErr error
	for range 3 { // a probed free port may be taken before the bind
		p := &redisProc{addr: freeLoopbackAddr(tb)}
		p.cmd, p.done, lastErr = startRedisProcess(s.bin, s.dir, p.addr, extra...)
		if lastErr == nil {
			s.mu.Lock()
			s.data = append(s.data, p)
			s.mu.Unlock()
			return p
		}
	}
	tb.Fatalf("testutil: start redis-server: %v", lastErr)
	return nil
}

// startSentinel starts a redis-sentinel watching master.
func (s *Sentinel) startSentinel(tb testing.TB, master string) {
	tb.Helper()
	host, mport, _ := net.SplitHostPort(master)
	var lastErr error
	for range 3 {
		p := &redisProc{addr: freeLoopbackAddr(tb)}
		_, port, _ := net.SplitHostPort(p.addr)
		conf := filepath.Join(s.dir, "sentinel-"+port+".conf")
		text := fmt.Sprintf("port %s\nbind 127.0.0.1\ndir %s\n"+
			"sentinel monitor %s %s %s 2\n"+
			"sentinel down-after-milliseconds %[3]s 1000\n"+
			"sentinel failover-timeout %[3]s 5000\n"+
			"sentinel parallel-syncs %[3]s 1\n", port, s.dir, SentinelMaster, host, mport)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			tb.Fatal(err)
		}
		p.cmd, p.done, lastErr = startServerProcess(s.bin, s.dir, p.addr, conf, "--sentinel")
		if lastErr == nil {
			s.mu.Lock()
			s.sentinels = append(s.sentinels, p)
			s.mu.Unlock()
			return
		}
	}
	tb.Fatalf("testutil: start redis-sentinel: %v", lastErr)
}

// converged reports nil once every replica's link to master is up and
// every sentinel knows master, its replicas and the other sentinels.
func (s *Sentinel) converged(master string, replicas int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, r := range s.liveData() {
		if r == master {
			continue
		}
		info, err := s.Client(r).Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica %s not in sync yet", r)
		}
	}
	for _, sa := range s.SentinelAddrs() {
		sc := s.sentinelClient(sa)
		m, err := sc.Master(ctx, SentinelMaster).Result()
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", sa, err)
		}
		if got := m["ip"] + ":" + m["port"]; got != master {
			return fmt.Errorf("sentinel %s: master %s; want %s", sa, got, master)
		}
		if m["num-slaves"] != strconv.Itoa(replicas) || m["num-other-sentinels"] != "2" {
			return fmt.Errorf("sentinel %s knows %s replicas and %s other sentinels; want %d and 2", sa, m["num-slaves"], m["num-other-sentinels"], replicas)
		}
	}
	return nil
}

// URL returns the -redis-url of the deployment, with query (for example
// "prefix=p"; "" for none).
func (s *Sentinel) URL(query string) string {
	u := "redis-sentinel://" + strings.Join(s.SentinelAddrs(), ",") + "/" + SentinelMaster
	if query != "" {
		u += "?" + query
	}
	return u
}

// SentinelAddrs returns the sentinels' addresses.
func (s *Sentinel) SentinelAddrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.sentinels))
	for i, p := range s.sentinels {
		out[i] = p.addr
	}
	return out
}

// liveData returns the addresses of the redis-servers not killed.
func (s *Sentinel) liveData() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.data {
		if !p.killed {
			out = append(out, p.addr)
		}
	}
	return out
}

// Master returns the master's address as every sentinel names it; it
// fails the test if they disagree.
func (s *Sentinel) Master() string {
	s.tb.Helper()
	addr, err := s.agreedMaster()
	if err != nil {
		s.tb.Fatalf("testutil: sentinel: %v", err)
	}
	return addr
}

// MasterAddr is Master without failing the test: the address every
// sentinel names as the master, or an error when one does not answer or
// they disagree (a failover is under way). For polling.
func (s *Sentinel) MasterAddr() (string, error) { return s.agreedMaster() }

func (s *Sentinel) agreedMaster() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var addr string
	for _, sa := range s.SentinelAddrs() {
		a, err := s.sentinelClient(sa).GetMasterAddrByName(ctx, SentinelMaster).Result()
		if err != nil {
			return "", fmt.Errorf("sentinel %s: %w", sa, err)
		}
		got := net.JoinHostPort(a[0], a[1])
		if addr != "" && got != addr {
			return "", fmt.Errorf("sentinels disagree on the master: %s and %s", addr, got)
		}
		addr = got
	}
	return addr, nil
}

// Replicas returns the live redis-servers that are not the master.
func (s *Sentinel) Replicas() []string {
	m := s.Master()
	return slices.DeleteFunc(s.liveData(), func(a string) bool { return a == m })
}

// WaitMaster waits until every sentinel names a master other than old,
// and that server says it is a master, and returns it.
func (s *Sentinel) WaitMaster(old string) string {
	s.tb.Helper()
	var addr string
	s.eventually(func() error {
		a, err := s.agreedMaster()
		if err != nil {
			return err
		}
		if a == old {
			return fmt.Errorf("the sentinels still name %s", old)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		info, err := s.Client(a).Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "role:master") {
			return fmt.Errorf("%s is not a master yet", a)
		}
		addr = a
		return nil
	})
	return addr
}

// Failover asks a sentinel for a failover (SENTINEL FAILOVER), retrying
// while no replica is fit yet, and returns the old master.
func (s *Sentinel) Failover() string {
	s.tb.Helper()
	old := s.Master()
	s.eventually(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return s.sentinelClient(s.SentinelAddrs()[0]).Failover(ctx, SentinelMaster).Err()
	})
	return old
}

// Kill ends the redis-server at addr with SIGKILL, as a crash would, and
// waits for it to exit.
func (s *Sentinel) Kill(addr string) {
	s.tb.Helper()
	p := s.proc(addr)
	s.mu.Lock()
	p.killed = true
	s.mu.Unlock()
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Pause stops the redis-server at addr with SIGSTOP; Resume (or cleanup)
// continues it.
func (s *Sentinel) Pause(addr string) { s.tb.Helper(); s.signalData(addr, syscall.SIGSTOP, true) }

// Resume continues a paused redis-server.
func (s *Sentinel) Resume(addr string) { s.tb.Helper(); s.signalData(addr, syscall.SIGCONT, false) }

func (s *Sentinel) signalData(addr string, sig syscall.Signal, paused bool) {
	p := s.proc(addr)
	s.mu.Lock()
	p.paused = paused
	s.mu.Unlock()
	_ = p.cmd.Process.Signal(sig)
}

func (s *Sentinel) proc(addr string) *redisProc {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.data {
		if p.addr == addr && !p.killed {
			return p
		}
	}
	s.tb.Fatalf("testutil: sentinel: no running redis-server at %s", addr)
	return nil
}

// Client returns a client of the redis-server or sentinel at addr (for
// admin commands), one per address, closed at cleanup.
func (s *Sentinel) Client(addr string) *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rc := s.clients[addr]; rc != nil {
		return rc
	}
	rc := redis.NewClient(&redis.Options{
		Addr: addr, DialTimeout: time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		MaxRetries: -1, DisableIdentity: true,
	})
	if s.clients == nil {
		s.clients = make(map[string]*redis.Client)
	}
	s.clients[addr] = rc
	return rc
}

// sentinelClient speaks the SENTINEL commands to the sentinel at addr,
// one per address, closed at cleanup.
func (s *Sentinel) sentinelClient(addr string) *redis.SentinelClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sc := s.sclients[addr]; sc != nil {
		return sc
	}
	sc := redis.NewSentinelClient(&redis.Options{
		Addr: addr, DialTimeout: time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		MaxRetries: -1, DisableIdentity: true,
	})
	if s.sclients == nil {
		s.sclients = make(map[string]*redis.SentinelClient)
	}
	s.sclients[addr] = sc
	return sc
}

// stopAll continues paused servers, terminates every process and waits.
func (s *Sentinel) stopAll() {
	s.mu.Lock()
	procs := append(slices.Clone(s.sentinels), s.data...)
	clients, sclients := s.clients, s.sclients
	s.clients, s.sclients = nil, nil
	s.mu.Unlock()
	for _, rc := range clients {
		_ = rc.Close()
	}
	for _, sc := range sclients {
		_ = sc.Close()
	}
	for _, p := range procs {
		if !p.killed {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// eventually polls cond until it returns nil, and fails the test with its
// last error after sentinelTimeout.
func (s *Sentinel) eventually(cond func() error) {
	s.tb.Helper()
	deadline := time.Now().Add(sentinelTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("testutil: sentinel: after %v: %v", sentinelTimeout, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by deadline
	}
}

// Replica is a redis-server replicating another, started for a test.
type Replica struct {
	tb testing.TB
	p  *redisProc
}

// StartReplica starts a redis-server replicating the one at master (no
// persistence), waits until it is in sync, and stops it at cleanup.
func StartReplica(tb testing.TB, master string) *Replica {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("testutil: redis-server is not on PATH: %v", err)
	}
	host, port, _ := net.SplitHostPort(master)
	dir := tb.TempDir()
	var lastErr error
	for range 3 {
		p := &redisProc{addr: freeLoopbackAddr(tb)}
		p.cmd, p.done, lastErr = startRedisProcess(bin, dir, p.addr, "--replicaof", host, port, "--repl-diskless-sync-delay", "0")
		if lastErr != nil {
			continue
		}
		r := &Replica{tb: tb, p: p}
		tb.Cleanup(func() {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			<-p.done
		})
		rc := redis.NewClient(&redis.Options{Addr: p.addr, DisableIdentity: true})
		defer rc.Close()
		deadline := time.Now().Add(sentinelTimeout)
		for {
			info, err := rc.Info(context.Background(), "replication").Result()
			if err == nil && strings.Contains(info, "master_link_status:up") {
				return r
			}
			if time.Now().After(deadline) {
				tb.Fatalf("testutil: replica %s of %s not in sync after %v (%v)", p.addr, master, sentinelTimeout, errors.Join(err))
			}
			time.Sleep(20 * time.Millisecond) // poll interval, bounded by deadline
		}
	}
	tb.Fatalf("testutil: start replica: %v", lastErr)
	return nil
}

// Addr returns the replica's host:port.
func (r *Replica) Addr() string { return r.p.addr }

// Pause stops the replica with SIGSTOP: it acknowledges nothing until
// Resume (or cleanup).
func (r *Replica) Pause() { _ = r.p.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused replica.
func (r *Replica) Resume() { _ = r.p.cmd.Process.Signal(syscall.SIGCONT) }
