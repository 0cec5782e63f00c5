// Command wakefloor measures this machine's floor under chat latency: the
// round trip of a few bytes over loopback TCP between two processes, the
// same two hops (sender to node, node to receiver) every chat message
// takes, with none of the node's work in between.
//
//	go run ./scripts/wakefloor                 # 2000 round trips, one per 10 ms
//	go run ./scripts/wakefloor -interval 0     # back to back
//
// At one message per 10 ms both processes sleep between messages, so each
// hop wakes a thread (in a VM: an interrupt to a halted virtual CPU);
// back to back they stay awake. The gap between the two is what wake-ups
// cost, and no server can deliver below the first figure on this machine.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"time"
)

func main() {
	n := flag.Int("n", 2000, "round trips")
	interval := flag.Duration("interval", 10*time.Millisecond, "pause between round trips (0: back to back)")
	echo := flag.String("echo", "", "internal: serve as the echo process on this listener address")
	flag.Parse()
	if *echo != "" {
		if err := serveEcho(*echo); err != nil {
			fmt.Fprintln(os.Stderr, "wakefloor echo:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*n, *interval); err != nil {
		fmt.Fprintln(os.Stderr, "wakefloor:", err)
		os.Exit(1)
	}
}

// serveEcho accepts one connection on addr and writes back what it reads.
func serveEcho(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println("ready")
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = io.Copy(c, c)
	return err
}

func run(n int, interval time.Duration) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(os.Args[0], "-echo", addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ready := make([]byte, 6)
	if _, err := io.ReadFull(out, ready); err != nil {
		return fmt.Errorf("echo process: %w", err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	rtts := make([]time.Duration, 0, n)
	for i := range n + n/10 { // the first tenth warms up
		if interval > 0 {
			time.Sleep(interval)
		}
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if i >= n/10 {
			rtts = append(rtts, time.Since(start))
		}
	}
	slices.Sort(rtts)
	q := func(p float64) time.Duration { return rtts[min(len(rtts)-1, int(p*float64(len(rtts))))] }
	fmt.Printf("loopback TCP round trip between two processes, %d trips, %v apart: p50 %v  p90 %v  p99 %v  max %v\n",
		len(rtts), interval, q(0.5).Round(time.Microsecond), q(0.9).Round(time.Microsecond), q(0.99).Round(time.Microsecond), rtts[len(rtts)-1].Round(time.Microsecond))
	return nil
}
