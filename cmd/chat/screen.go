package main

import (
	"bufio"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/term"
)

// screen is where the client talks to its user: lines printed above the
// input, one state line, and the input itself. Methods other than
// readLine may be called from any goroutine.
type screen interface {
	// Writer takes whole lines (already made inert), each in one Write.
	io.Writer
	// setState shows the connection's state: on a terminal as the
	// prompt, redrawn in place; elsewhere as a line, only when kind
	// changes (a log of every retry is the noise this replaces).
	setState(kind, text string)
	// setName changes the name the state line shows (already inert):
	// "alice@general", the user and the current room. A plain screen
	// shows no state line; the session says the switch in a line.
	setName(name string)
	// readLine returns the next line typed; io.EOF at the end of input
	// (Ctrl-D, Ctrl-C on a terminal, or a closed pipe).
	readLine() (string, error)
	// close restores the terminal. Idempotent.
	close()
}

// newScreen is a terminal screen when stdin and stdout are both the
// terminal, else a plain one (pipes, files, tests).
func newScreen(stdin io.Reader, stdout io.Writer, name string) (screen, error) {
	in, ok1 := stdin.(*os.File)
	out, ok2 := stdout.(*os.File)
	if ok1 && ok2 && term.IsTerminal(int(in.Fd())) && term.IsTerminal(int(out.Fd())) {
		return newTTY(in, out, name)
	}
	return &plainScreen{w: stdout, sc: bufio.NewScanner(stdin)}, nil
}

// ttyScreen is golang.org/x/term's line editor on a terminal in raw mode.
// Its Write clears the input line, prints above it and redraws the prompt
// and what was typed, so an incoming message never breaks the line being
// typed; the prompt is the state line.
type ttyScreen struct {
	t     *term.Terminal
	in    *os.File
	out   *os.File
	old   *term.State
	winch chan os.Signal
	once  sync.Once

	mu         sync.Mutex // orders prompt changes
	name       string
	kind, text string // the last state
}

func newTTY(in, out *os.File, name string) (*ttyScreen, error) {
	old, err := term.MakeRaw(int(in.Fd()))
	if err != nil {
		return nil, err
	}
	s := &ttyScreen{in: in, out: out, old: old, name: name, kind: "connecting", text: "connecting…", winch: make(chan os.Signal, 1)}
	s.t = term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{in, out}, s.prompt())
	resize := func() {
		if w, h, err := term.GetSize(int(out.Fd())); err == nil {
			_ = s.t.SetSize(w, h)
		}
	}
	resize()
	signal.Notify(s.winch, syscall.SIGWINCH)
	go func() {
		for range s.winch {
			resize()
		}
	}()
	return s, nil
}

func (s *ttyScreen) Write(p []byte) (int, error) { return s.t.Write(p) }

// prompt is the state line: "alice@general> " when live, else the state
// in brackets before it. s.mu must be held (or s not yet shared).
func (s *ttyScreen) prompt() string {
	if s.kind == "live" {
		return s.name + "> "
	}
	return "[" + s.text + "] " + s.name + "> "
}

func (s *ttyScreen) setState(kind, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kind, s.text = kind, text
	s.redrawLocked()
}

func (s *ttyScreen) setName(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.name = name
	s.redrawLocked()
}

// redrawLocked shows the prompt. s.mu must be held.
func (s *ttyScreen) redrawLocked() {
	s.t.SetPrompt(s.prompt())
	// An empty write redraws the prompt and the input in place.
	_, _ = s.t.Write(nil)
}

func (s *ttyScreen) readLine() (string, error) { return s.t.ReadLine() }

func (s *ttyScreen) close() {
	s.once.Do(func() {
		signal.Stop(s.winch)
		close(s.winch)
		// The prompt (the last state) stays; the shell's starts on the
		// next line. Written past the line editor, which would redraw
		// the prompt after it.
		_, _ = s.out.Write([]byte("\r\n"))
		_ = term.Restore(int(s.in.Fd()), s.old)
	})
}

// plainScreen writes lines as they come and reads lines from a pipe.
type plainScreen struct {
	mu       sync.Mutex
	w        io.Writer
	sc       *bufio.Scanner
	lastKind string
}

func (s *plainScreen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *plainScreen) setState(kind, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if kind == s.lastKind {
		return
	}
	s.lastKind = kind
	if kind != "live" { // live is said by its own line
		io.WriteString(s.w, "* "+text+"\n")
	}
}

func (s *plainScreen) setName(string) {}

func (s *plainScreen) readLine() (string, error) {
	if s.sc.Scan() {
		return s.sc.Text(), nil
	}
	if err := s.sc.Err(); err != nil {
		return "", err
	}
	return "", io.EOF
}

func (s *plainScreen) close() {}
