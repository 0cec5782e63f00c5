package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
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

	"example.com/chat/pkg/pubsub"
)

// clusterTimeout bounds every wait of the cluster fixture: start, create,
// convergence after a failover or a slot move.
const clusterTimeout = 30 * time.Second

// Cluster is a Redis Cluster of redis-server processes started for a test,
// on free loopback ports, without persistence, with a short node timeout
// (1 s) so that a killed master's replica takes over within seconds.
type Cluster struct {
	tb  testing.TB
	bin string
	dir string

	mu      sync.Mutex
	nodes   []*clusterProc // in creation order: masters first, then replicas
	clients map[string]*redis.Client
}

// clusterProc is one redis-server of a Cluster.
type clusterProc struct {
	addr    string
	busPort string
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	killed  bool
}

// StartCluster starts masters+masters*replicasPerMaster redis-server
// processes in cluster mode, joins them with redis-cli --cluster create,
// waits until every node reports cluster_state:ok and agrees on the slot
// map, and stops them all in tb.Cleanup. It fails tb when redis-server or
// redis-cli is missing.
func StartCluster(tb testing.TB, masters, replicasPerMaster int) *Cluster {
	tb.Helper()
	if masters < 3 {
		tb.Fatalf("testutil: a Redis Cluster needs at least 3 masters, got %d", masters)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("testutil: redis-server is not on PATH: install it (apt-get install redis-server): %v", err)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		tb.Fatalf("testutil: redis-cli is not on PATH: install it (apt-get install redis-tools): %v", err)
	}
	// Forming a cluster was seen to hang at "Waiting for the cluster to
	// join" on a loaded machine (once in a few hundred clusters): a fresh
	// set of processes on fresh ports is tried once more before failing.
	var lastErr error
	for attempt := 1; attempt <= 2; attempt++ {
		c := &Cluster{tb: tb, bin: bin, dir: tb.TempDir()}
		tb.Cleanup(c.stopAll)
		if lastErr = c.form(cli, masters, replicasPerMaster); lastErr == nil {
			return c
		}
		tb.Logf("testutil: cluster attempt %d did not form: %v", attempt, lastErr)
		c.stopAll()
	}
	tb.Fatalf("testutil: cluster: %v", lastErr)
	return nil
}

// form starts the cluster's processes, joins them with redis-cli --cluster
// create, and waits (clusterTimeout) until every node agrees.
func (c *Cluster) form(cli string, masters, replicasPerMaster int) error {
	tb := c.tb
	n := masters * (1 + replicasPerMaster)
	for range n {
		var lastErr error
		for range 3 { // a probed free port may be taken before the bind
			p := &clusterProc{addr: freeLoopbackAddr(tb)}
			_, p.busPort, _ = net.SplitHostPort(freeLoopbackAddr(tb))
			if lastErr = c.startProc(p); lastErr == nil {
				c.mu.Lock()
				c.nodes = append(c.nodes, p)
				c.mu.Unlock()
				break
			}
		}
		if lastErr != nil {
			return fmt.Errorf("start cluster node: %w", lastErr)
		}
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicasPerMaster), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer ccancel()
	deadline := time.Now().Add(clusterTimeout)
	for {
		err := c.converged(cctx, masters, replicasPerMaster)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not converged after %v: %w", clusterTimeout, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by deadline
	}
}

// startProc runs one cluster-enabled redis-server and waits for its PING.
func (c *Cluster) startProc(p *clusterProc) error {
	_, port, _ := net.SplitHostPort(p.addr)
	cmd, done, err := startRedisProcess(c.bin, c.dir, p.addr,
		"--cluster-enabled", "yes",
		"--cluster-port", p.busPort,
		"--cluster-config-file", filepath.Join(c.dir, "nodes-"+port+".conf"),
		"--cluster-node-timeout", "1000",
		// A replica that lagged (Paused) may still take over: the failover
		// that loses acknowledged writes, which the tests must survive.
		"--cluster-replica-validity-factor", "0",
		// A replica must have synced to be promoted: no wait for others.
		"--repl-diskless-sync-delay", "0")
	if err != nil {
		return err
	}
	p.cmd, p.done = cmd, done
	return nil
}

// stopAll terminates every node still running and waits for them.
func (c *Cluster) stopAll() {
	c.mu.Lock()
	nodes := slices.Clone(c.nodes)
	c.mu.Unlock()
	for _, p := range nodes {
		if p.cmd != nil {
			_ = p.cmd.Process.Signal(syscall.SIGCONT) // a Paused node handles no SIGTERM
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range nodes {
		if p.cmd == nil {
			continue
		}
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// Addrs returns every node's host:port (masters first, as created), the
// seed list for a cluster client. Killed nodes are included.
func (c *Cluster) Addrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.nodes))
	for i, p := range c.nodes {
		out[i] = p.addr
	}
	return out
}

// Live returns the addresses of the nodes not killed.
func (c *Cluster) Live() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, p := range c.nodes {
		if !p.killed {
			out = append(out, p.addr)
		}
	}
	return out
}

// Kill ends the node at addr with SIGKILL, as a crash would, and waits for
// it to exit.
func (c *Cluster) Kill(addr string) {
	c.tb.Helper()
	c.mu.Lock()
	var p *clusterProc
	for _, n := range c.nodes {
		if n.addr == addr {
			p = n
		}
	}
	if p == nil || p.killed {
		c.mu.Unlock()
		c.tb.Fatalf("testutil: Kill(%s): no such running cluster node", addr)
		return
	}
	p.killed = true
	c.mu.Unlock()
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Client returns a single-node client of addr (for admin commands and
// per-node queries such as PUBSUB SHARDNUMSUB), one per address, closed at
// cleanup.
func (c *Cluster) Client(addr string) *redis.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rc := c.clients[addr]; rc != nil {
		return rc
	}
	rc := redis.NewClient(&redis.Options{
		Addr: addr, DialTimeout: time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		MaxRetries: -1, DisableIdentity: true,
	})
	if c.clients == nil {
		c.clients = make(map[string]*redis.Client)
	}
	c.clients[addr] = rc
	c.tb.Cleanup(func() { _ = rc.Close() })
	return rc
}

// SlotOf returns the cluster hash slot of key, honouring {hash tags}.
func SlotOf(key string) int { return pubsub.ClusterSlot(key) }

// RoomSlot returns the slot of every key and of the channel of room (they
// share the hash tag {room}, see history.Keys).
func RoomSlot(room string) int { return SlotOf("{" + room + "}") }

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr, master string // master: the master's id for a replica, "-" for a master
	flags            []string
	slots            [][2]int
}

func (n clusterNode) is(flag string) bool { return slices.Contains(n.flags, flag) }

// nodes returns the CLUSTER NODES view of the first live node that answers.
func (c *Cluster) nodesView(ctx context.Context) ([]clusterNode, string, error) {
	var lastErr error
	for _, addr := range c.Live() {
		out, err := c.do(ctx, addr, "cluster", "nodes").Text()
		if err != nil {
			lastErr = err
			continue
		}
		return parseClusterNodes(out), addr, nil
	}
	return nil, "", fmt.Errorf("no live node answers CLUSTER NODES: %v", lastErr)
}

func parseClusterNodes(out string) []clusterNode {
	var nodes []clusterNode
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr := f[1]
		if i := strings.IndexByte(addr, '@'); i >= 0 {
			addr = addr[:i]
		}
		n := clusterNode{id: f[0], addr: addr, flags: strings.Split(f[2], ","), master: f[3]}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") { // a slot being imported or migrated
				continue
			}
			lo, hi, ok := strings.Cut(s, "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if ok {
				b, _ = strconv.Atoi(hi)
			}
			n.slots = append(n.slots, [2]int{a, b})
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// do runs one command on the node at addr.
func (c *Cluster) do(ctx context.Context, addr string, args ...any) *redis.Cmd {
	return c.Client(addr).Do(ctx, args...)
}

// converged checks that every live node says cluster_state:ok, knows every
// live node, and agrees with the others on which master owns which slots,
// with the expected numbers of masters (with slots) and replicas.
func (c *Cluster) converged(ctx context.Context, masters, replicasPerMaster int) error {
	live := c.Live()
	var ref string
	for _, addr := range live {
		info, err := c.do(ctx, addr, "cluster", "info").Text()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster_state is not ok yet", addr)
		}
		repl, err := c.do(ctx, addr, "info", "replication").Text()
		if err != nil {
			return fmt.Errorf("%s: INFO replication: %w", addr, err)
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("%s: the replica has not synced with its master yet", addr)
		}
		out, err := c.do(ctx, addr, "cluster", "nodes").Text()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER NODES: %w", addr, err)
		}
		nodes := parseClusterNodes(out)
		view := slotView(nodes)
		if ref == "" {
			ref = view
		} else if view != ref {
			return fmt.Errorf("%s: slot map %s differs from %s", addr, view, ref)
		}
		var m, r int
		for _, n := range nodes {
			switch {
			case n.is("fail") || n.is("fail?"):
			case n.is("master") && len(n.slots) > 0:
				m++
			case n.is("slave"):
				r++
			}
		}
		if masters > 0 && (m != masters || r != masters*replicasPerMaster) {
			return fmt.Errorf("%s: sees %d masters and %d replicas, want %d and %d", addr, m, r, masters, masters*replicasPerMaster)
		}
	}
	return nil
}

// slotView renders who owns which slots, for comparing nodes' views.
func slotView(nodes []clusterNode) string {
	var parts []string
	for _, n := range nodes {
		if n.is("master") && len(n.slots) > 0 {
			parts = append(parts, fmt.Sprintf("%s=%v", n.addr, n.slots))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// eventually polls cond every 20 ms until it returns nil, failing the test
// with cond's last error after clusterTimeout.
func (c *Cluster) eventually(cond func() error) {
	c.tb.Helper()
	deadline := time.Now().Add(clusterTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("testutil: cluster: after %v: %v", clusterTimeout, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by deadline
	}
}

// MasterForSlot returns the address of the master that owns slot, in the
// view of the first live node.
func (c *Cluster) MasterForSlot(slot int) string {
	c.tb.Helper()
	addr, err := c.masterForSlot(context.Background(), slot)
	if err != nil {
		c.tb.Fatalf("testutil: cluster: %v", err)
	}
	return addr
}

func (c *Cluster) masterForSlot(ctx context.Context, slot int) (string, error) {
	nodes, from, err := c.nodesView(ctx)
	if err != nil {
		return "", err
	}
	for _, n := range nodes {
		if !n.is("master") || n.is("fail") {
			continue
		}
		for _, r := range n.slots {
			if slot >= r[0] && slot <= r[1] {
				return n.addr, nil
			}
		}
	}
	return "", fmt.Errorf("no live master owns slot %d in the view of %s", slot, from)
}

// MasterFor returns the address of the master that owns room's slot (its
// keys and its channel).
func (c *Cluster) MasterFor(room string) string {
	c.tb.Helper()
	return c.MasterForSlot(RoomSlot(room))
}

// Masters returns the addresses of the masters that own slots, sorted.
func (c *Cluster) Masters() []string {
	c.tb.Helper()
	nodes, _, err := c.nodesView(context.Background())
	if err != nil {
		c.tb.Fatalf("testutil: cluster: %v", err)
	}
	var out []string
	for _, n := range nodes {
		if n.is("master") && !n.is("fail") && len(n.slots) > 0 {
			out = append(out, n.addr)
		}
	}
	slices.Sort(out)
	return out
}

// WaitMasterFor waits until every live node agrees that a master other
// than not owns room's slot (after a failover), and returns it.
func (c *Cluster) WaitMasterFor(room, not string) string {
	c.tb.Helper()
	slot := RoomSlot(room)
	var owner string
	c.eventually(func() error {
		owner = ""
		for _, addr := range c.Live() {
			out, err := c.do(context.Background(), addr, "cluster", "nodes").Text()
			if err != nil {
				return err
			}
			var o string
			for _, n := range parseClusterNodes(out) {
				for _, r := range n.slots {
					if n.is("master") && slot >= r[0] && slot <= r[1] {
						o = n.addr
					}
				}
			}
			if o == "" || o == not {
				return fmt.Errorf("%s: slot %d is owned by %q", addr, slot, o)
			}
			if owner != "" && o != owner {
				return fmt.Errorf("nodes disagree on slot %d: %s and %s", slot, owner, o)
			}
			owner = o
		}
		return nil
	})
	return owner
}

// nodeID returns the cluster node id of the node at addr.
func (c *Cluster) nodeID(ctx context.Context, addr string) (string, error) {
	return c.do(ctx, addr, "cluster", "myid").Text()
}

// MigrateSlot moves slot, with its keys, from its owner to the master at
// to, the way redis-cli --cluster reshard does: IMPORTING on the target,
// MIGRATING on the source, MIGRATE of every key (repeated until the source
// holds none: clients may still create keys there), then SETSLOT NODE on
// the target, the source and every other master. Clients see ASK and
// TRYAGAIN meanwhile, and MOVED after.
func (c *Cluster) MigrateSlot(slot int, to string) {
	c.tb.Helper()
	if err := c.migrateSlot(slot, to); err != nil {
		c.tb.Fatalf("testutil: cluster: migrate slot %d to %s: %v", slot, to, err)
	}
}

func (c *Cluster) migrateSlot(slot int, to string) error {
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	from, err := c.masterForSlot(ctx, slot)
	if err != nil {
		return err
	}
	if from == to {
		return fmt.Errorf("%s already owns it", to)
	}
	fromID, err := c.nodeID(ctx, from)
	if err != nil {
		return err
	}
	toID, err := c.nodeID(ctx, to)
	if err != nil {
		return err
	}
	if err := c.do(ctx, to, "cluster", "setslot", slot, "importing", fromID).Err(); err != nil {
		return fmt.Errorf("SETSLOT IMPORTING on %s: %w", to, err)
	}
	if err := c.do(ctx, from, "cluster", "setslot", slot, "migrating", toID).Err(); err != nil {
		return fmt.Errorf("SETSLOT MIGRATING on %s: %w", from, err)
	}
	host, port, _ := net.SplitHostPort(to)
	for {
		keys, err := c.do(ctx, from, "cluster", "getkeysinslot", slot, 100).StringSlice()
		if err != nil {
			return fmt.Errorf("GETKEYSINSLOT on %s: %w", from, err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"migrate", host, port, "", 0, 5000, "replace", "keys"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := c.do(ctx, from, args...).Err(); err != nil && !errors.Is(err, redis.Nil) && err.Error() != "NOKEY" {
			return fmt.Errorf("MIGRATE on %s: %w", from, err)
		}
	}
	if err := c.do(ctx, to, "cluster", "setslot", slot, "node", toID).Err(); err != nil {
		return fmt.Errorf("SETSLOT NODE on %s: %w", to, err)
	}
	if err := c.do(ctx, from, "cluster", "setslot", slot, "node", toID).Err(); err != nil {
		return fmt.Errorf("SETSLOT NODE on %s: %w", from, err)
	}
	for _, m := range c.Masters() {
		if m != to && m != from {
			// Best effort: the config epoch bump spreads it by gossip anyway.
			_ = c.do(ctx, m, "cluster", "setslot", slot, "node", toID).Err()
		}
	}
	return nil
}

// WaitConverged waits until every live node reports cluster_state:ok and
// all agree on the slot map (after a failover or a slot move).
func (c *Cluster) WaitConverged() {
	c.tb.Helper()
	c.eventually(func() error { return c.converged(context.Background(), 0, 0) })
}

// ReplicasOf returns the live replicas of the master at addr (as their
// INFO replication says).
func (c *Cluster) ReplicasOf(master string) []string {
	c.tb.Helper()
	_, mport, _ := net.SplitHostPort(master)
	var out []string
	for _, a := range c.Live() {
		info, err := c.Client(a).Info(context.Background(), "replication").Result()
		if err != nil {
			c.tb.Fatalf("testutil: INFO replication of %s: %v", a, err)
		}
		if strings.Contains(info, "role:slave") && strings.Contains(info, "master_port:"+mport+"\r\n") {
			out = append(out, a)
		}
	}
	return out
}

// ReplicaOf returns the address of a replica of the master at addr.
func (c *Cluster) ReplicaOf(addr string) string {
	c.tb.Helper()
	nodes, _, err := c.nodesView(context.Background())
	if err != nil {
		c.tb.Fatalf("testutil: cluster: %v", err)
	}
	var id string
	for _, n := range nodes {
		if n.addr == addr {
			id = n.id
		}
	}
	for _, n := range nodes {
		if id != "" && n.master == id && !n.is("fail") {
			return n.addr
		}
	}
	c.tb.Fatalf("testutil: cluster: no replica of %s", addr)
	return ""
}

// CutReplication black-holes the replication links of the master at addr
// (DropTCP both ways on each replica's connection): its replicas stop
// receiving its writes, with no error on either side, as a slow or
// congested link would. It returns a function that restores them.
func (c *Cluster) CutReplication(addr string) (undo func()) {
	c.tb.Helper()
	list, err := c.do(context.Background(), addr, "client", "list", "type", "replica").Text()
	if err != nil {
		c.tb.Fatalf("testutil: cluster: CLIENT LIST TYPE replica on %s: %v", addr, err)
	}
	_, mport, _ := net.SplitHostPort(addr)
	master, _ := strconv.Atoi(mport)
	var undos []func()
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		for _, f := range strings.Fields(line) {
			a, ok := strings.CutPrefix(f, "addr=")
			if !ok {
				continue
			}
			_, p, _ := net.SplitHostPort(a)
			port, _ := strconv.Atoi(p)
			undos = append(undos, DropTCP(c.tb, master, port), DropTCP(c.tb, port, master))
		}
	}
	if len(undos) == 0 {
		c.tb.Fatalf("testutil: cluster: %s has no replica connected", addr)
	}
	return func() {
		for _, u := range undos {
			u()
		}
	}
}

// Pause stops the node at addr with SIGSTOP; Resume continues it (cleanup
// does too, before it stops the node).
func (c *Cluster) Pause(addr string) { c.tb.Helper(); c.signalProc(addr, syscall.SIGSTOP) }

// Resume continues a node stopped by Pause.
func (c *Cluster) Resume(addr string) { c.tb.Helper(); c.signalProc(addr, syscall.SIGCONT) }

func (c *Cluster) signalProc(addr string, sig syscall.Signal) {
	c.tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.addr == addr && !n.killed {
			_ = n.cmd.Process.Signal(sig)
			return
		}
	}
	c.tb.Fatalf("testutil: no running cluster node at %s", addr)
}
