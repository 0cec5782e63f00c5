package testutil

import (
	"os/exec"
	"strconv"
	"sync"
	"testing"
)

// DropTCP makes the kernel drop every TCP packet on loopback from port src
// to port dst (0: any port), as a network that black-holes packets does:
// no reset, no error, the peers' writes wait in their buffers and are
// retransmitted. It returns a function that removes the rule; the test's
// cleanup removes it too. It needs root and iptables (the suite's
// scripts/test.sh installs it), and fails tb without them.
func DropTCP(tb testing.TB, src, dst int) (undo func()) {
	tb.Helper()
	bin, err := exec.LookPath("iptables")
	if err != nil {
		tb.Fatalf("testutil: iptables is not on PATH: install it (apt-get install iptables): %v", err)
	}
	rule := []string{"INPUT", "-i", "lo", "-p", "tcp"}
	if src != 0 {
		rule = append(rule, "--sport", strconv.Itoa(src))
	}
	if dst != 0 {
		rule = append(rule, "--dport", strconv.Itoa(dst))
	}
	rule = append(rule, "-j", "DROP")
	if out, err := exec.Command(bin, append([]string{"-w", "-I"}, rule...)...).CombinedOutput(); err != nil {
		tb.Fatalf("testutil: iptables -I %v: %v\n%s (the fault tests need root)", rule, err, out)
	}
	var once sync.Once
	undo = func() {
		once.Do(func() {
			if out, err := exec.Command(bin, append([]string{"-w", "-D"}, rule...)...).CombinedOutput(); err != nil {
				tb.Errorf("testutil: iptables -D %v: %v\n%s", rule, err, out)
			}
		})
	}
	tb.Cleanup(undo)
	return undo
}

// BlackHole drops every packet to and from port on loopback (see
// DropTCP) until the returned function is called.
func BlackHole(tb testing.TB, port int) (undo func()) {
	tb.Helper()
	in, out := DropTCP(tb, 0, port), DropTCP(tb, port, 0)
	return func() { in(); out() }
}
