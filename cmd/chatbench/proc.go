package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports (what `getconf CLK_TCK`
// prints).
const clockTicks = 100

// procCPU returns a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu of pid %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted from the last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// procRSS returns a process's resident set size (VmRSS) in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read rss of pid %d: %w", pid, err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(v)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(string(f[0]), 10, 64)
			if err != nil {
				break
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("parse /proc/%d/status: no VmRSS", pid)
}

// serverSample is the servers' CPU and RSS at one moment.
type serverSample struct {
	cpu []time.Duration // by pid
	rss []int64         // by pid, bytes
}

func sampleServers(pids []int) (serverSample, error) {
	s := serverSample{cpu: make([]time.Duration, len(pids)), rss: make([]int64, len(pids))}
	for i, pid := range pids {
		var err error
		if s.cpu[i], err = procCPU(pid); err != nil {
			return s, err
		}
		if s.rss[i], err = procRSS(pid); err != nil {
			return s, err
		}
	}
	return s, nil
}

func (s serverSample) totalRSS() int64 {
	var n int64
	for _, r := range s.rss {
		n += r
	}
	return n
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heapSample is the nodes' live heap after a GC, from their pprof
// endpoints, summed.
type heapSample struct {
	heapAlloc, stackInuse int64
	goroutines            int64
}

// bytes is the live heap plus goroutine stacks: what the hub's
// BenchmarkMemoryPerRoom counts.
func (h heapSample) bytes() int64 { return h.heapAlloc + h.stackInuse }

// sampleHeaps asks each pprof address (node -pprof-addr) for its heap
// profile after a GC (/debug/pprof/heap?gc=1&debug=1) and sums the
// HeapAlloc and StackInuse (its "Stack" line) it reports, and counts the goroutines
// (/debug/pprof/goroutine?debug=1).
func sampleHeaps(ctx context.Context, addrs []string) (heapSample, error) {
	var h heapSample
	for _, addr := range addrs {
		b, err := fetchPprof(ctx, addr, "/debug/pprof/heap?gc=1&debug=1")
		if err != nil {
			return h, err
		}
		alloc, err1 := memStat(b, "HeapAlloc")
		stack, err2 := memStat(b, "Stack") // "# Stack = <StackInuse> / <StackSys>"
		if err := errors.Join(err1, err2); err != nil {
			return h, fmt.Errorf("heap profile of %s: %w", addr, err)
		}
		h.heapAlloc += alloc
		h.stackInuse += stack
		b, err = fetchPprof(ctx, addr, "/debug/pprof/goroutine?debug=1")
		if err != nil {
			return h, err
		}
		n, err := goroutineCount(b)
		if err != nil {
			return h, fmt.Errorf("goroutine profile of %s: %w", addr, err)
		}
		h.goroutines += n
	}
	return h, nil
}

func fetchPprof(ctx context.Context, addr, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, fmt.Errorf("pprof %s: %w", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("pprof %s: %w", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("pprof %s%s: %w", addr, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pprof %s%s: %s", addr, path, resp.Status)
	}
	return b, nil
}

// memStat finds "# name = value" (or "# name = value / more") among the
// runtime.MemStats a debug=1 heap profile ends with, and returns value.
func memStat(profile []byte, name string) (int64, error) {
	prefix := []byte("# " + name + " = ")
	for line := range bytes.Lines(profile) {
		if v, ok := bytes.CutPrefix(line, prefix); ok {
			f := bytes.Fields(v)
			if len(f) == 0 {
				return 0, fmt.Errorf("empty %s", name)
			}
			n, err := strconv.ParseInt(string(f[0]), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("bad %s: %w", name, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no %s in the profile", name)
}

// goroutineCount reads "goroutine profile: total N", the first line of a
// debug=1 goroutine profile.
func goroutineCount(profile []byte) (int64, error) {
	line, _, _ := bytes.Cut(profile, []byte("\n"))
	v, ok := bytes.CutPrefix(line, []byte("goroutine profile: total "))
	if !ok {
		return 0, fmt.Errorf("unexpected first line %.80q", line)
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad total: %w", err)
	}
	return n, nil
}

// loadAvg returns the host's 1, 5 and 15 minute load averages from
// /proc/loadavg (nil if unreadable): a shared machine's figures are read
// with it.
func loadAvg() []float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	f := bytes.Fields(b)
	if len(f) < 3 {
		return nil
	}
	out := make([]float64, 3)
	for i := range out {
		if out[i], err = strconv.ParseFloat(string(f[i]), 64); err != nil {
			return nil
		}
	}
	return out
}
