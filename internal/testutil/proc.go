package testutil

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// NodeBinary is the cmd/node binary for tests that run nodes as processes
// (to kill, stop or measure them), built on first use and shared by the
// test binary's tests. Remove it from TestMain once the tests are done.
type NodeBinary struct {
	// Race builds it with the race detector, so that a node's races fail
	// the test too.
	Race bool
	// Env names an environment variable that, when set, is the path of a
	// binary to use instead of building one.
	Env string

	once sync.Once
	dir  string
	path string
	err  error
}

// Path returns the binary's path, building it on the first call; a build
// failure fails tb.
func (b *NodeBinary) Path(tb testing.TB) string {
	tb.Helper()
	b.once.Do(func() {
		if b.Env != "" {
			if bin := os.Getenv(b.Env); bin != "" {
				b.path = bin
				return
			}
		}
		dir, err := os.MkdirTemp("", "chat-node-")
		if err != nil {
			b.err = err
			return
		}
		b.dir = dir
		path := filepath.Join(dir, "node")
		args := []string{"build", "-o", path}
		if b.Race {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, "example.com/chat/cmd/node")...).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build cmd/node: %v\n%s", err, out)
			return
		}
		b.path = path
	})
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

// Remove deletes a binary Path built.
func (b *NodeBinary) Remove() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// TailBuffer keeps the last Max bytes (at least; zero means 64 KiB) written
// to it, such as a node process's log, shown when its test fails. It is
// safe for a writer and a reader.
type TailBuffer struct {
	Max int

	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *TailBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	limit := l.Max
	if limit <= 0 {
		limit = 64 << 10
	}
	l.buf.Write(p)
	if l.buf.Len() > 2*limit {
		tail := append([]byte(nil), l.buf.Bytes()[l.buf.Len()-limit:]...)
		l.buf.Reset()
		l.buf.Write(tail)
	}
	return len(p), nil
}

func (l *TailBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// LineWriter copies everything to W and hands each complete line (without
// its newline) to Line, as a process writes its output. Only one goroutine
// may write to it (os/exec's copier does).
type LineWriter struct {
	W    io.Writer
	Line func([]byte)
	buf  []byte
}

func (l *LineWriter) Write(p []byte) (int, error) {
	if _, err := l.W.Write(p); err != nil {
		return 0, err
	}
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.Line(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}
