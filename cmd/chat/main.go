// Command chat is a terminal chat client: the mobile path, for people. It
// connects to one or more nodes over gRPC, joins a room, prints history and
// live messages, sends what you type, shows typing and presence, and
// reconnects and resumes by itself. One stream carries all its rooms:
// /join, /leave, /dm (direct conversations) and /rooms, with a current
// room that typed lines go to, as in irssi or weechat.
//
//	chat -addr localhost:50051 -user alice -room general
//	chat -addr localhost:50051 -token "$TOKEN"     # the user is the token's
//
// Type a line to send it; /help lists the commands. On a terminal the line
// you type stays at the bottom (golang.org/x/term's line editor): incoming
// messages are printed above it, and its prompt is the connection's state.
//
// It stops with exit status 1 when the node refuses it for good (a bad or
// expired token, a token for another user, a room it may not join), 2 on
// bad flags, 0 on /quit, Ctrl-D or Ctrl-C.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"example.com/chat/pkg/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Getenv)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode is the process's exit status for run's error, which it prints
// on stderr unless the screen already showed it.
func exitCode(err error, stderr io.Writer) int {
	var shown *shownError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usageError{}):
		fmt.Fprintln(stderr, "chat:", err)
		return 2
	case errors.As(err, &shown):
		return 1
	}
	fmt.Fprintln(stderr, "chat:", err)
	return 1
}

// usageError is a bad command line: exit status 2.
type usageError struct{ error }

// shownError is an error already shown on the screen: exit status 1,
// printed once.
type shownError struct{ error }

func (e *shownError) Unwrap() error { return e.error }

// options are the parsed flags.
type options struct {
	addrs       []string
	user, room  string
	token       string
	tls         *tls.Config
	history     int
	heartbeat   time.Duration
	sendTimeout time.Duration
}

func parseFlags(args []string, stdout io.Writer, getenv func(string) string) (*options, error) {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addrs := fs.String("addr", "localhost:50051", "comma-separated node gRPC addresses, tried in turn")
	user := fs.String("user", "", "your user name (default: the token's subject, else $USER)")
	room := fs.String("room", "general", "room to join")
	token := fs.String("token", "", "JWT for a node that requires one (default: env CHAT_TOKEN); the user is its subject")
	caFile := fs.String("tls-ca", "", "PEM CA: connect with TLS, verifying the server with it")
	history := fs.Int("history", 20, "messages of history to show on join")
	heartbeat := fs.Duration("heartbeat-timeout", 45*time.Second, "give a node up (reconnect to the next address, resume) after this long without a frame from it; keep it above 1.5 × the nodes' -heartbeat")
	sendTimeout := fs.Duration("send-timeout", 30*time.Second, "how long a line may wait for its acknowledgement, across reconnects, before it is reported as not sent")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: chat [flags]\n\nA terminal chat client. Type a line to send it; /help lists the commands.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	o := &options{room: *room, history: *history, heartbeat: *heartbeat, sendTimeout: *sendTimeout}
	for _, a := range strings.Split(*addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			o.addrs = append(o.addrs, a)
		}
	}
	if len(o.addrs) == 0 {
		return nil, usageError{errors.New("-addr is empty")}
	}
	o.token = *token
	if o.token == "" {
		o.token = getenv("CHAT_TOKEN")
	}
	o.token = strings.TrimSpace(o.token)
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("-tls-ca: %w", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageError{fmt.Errorf("-tls-ca: no certificate in %s", *caFile)}
		}
		o.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	// Who we are: the token's subject, which the node enforces, unless
	// -user names someone else (refused here, before the node would).
	o.user = *user
	if o.token != "" {
		c, err := peekToken(o.token)
		if err != nil {
			return nil, err
		}
		switch {
		case c.Subject == "":
			return nil, errors.New("the token has no subject (sub), so it names no user")
		case o.user != "" && o.user != c.Subject:
			return nil, fmt.Errorf("the token is for user %q, not %q: drop -user, or get a token for %q", c.Subject, o.user, o.user)
		case c.expired(time.Now()):
			return nil, fmt.Errorf("the token expired at %s: get a fresh one (for example: node token -user %s)", c.expiry().Format(time.RFC3339), c.Subject)
		}
		o.user = c.Subject
	}
	if o.user == "" {
		o.user = getenv("USER")
	}
	if o.user == "" {
		return nil, usageError{errors.New("no user name: give -user NAME (or -token)")}
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer, getenv func(string) string) error {
	o, err := parseFlags(args, stdout, getenv)
	if err != nil {
		return err
	}
	scr, err := newScreen(stdin, stdout, o.user+"@"+o.room)
	if err != nil {
		return err
	}
	defer scr.close()
	s := newSession(o, scr)
	c, err := client.Dial(client.Config{
		Addrs: o.addrs, User: o.user, Room: o.room, Token: o.token, TLS: o.tls, History: o.history,
		HeartbeatTimeout: o.heartbeat, OnState: s.onState,
		Personal: true, // invitations: a direct conversation or a private room waits
		Changes:  true, // edits, deletes and reactions, shown as lines of their own
	})
	if err != nil {
		return err
	}
	s.c = c
	s.out.printf("* joining #%s as %s via %s (/help lists the commands)", o.room, o.user, strings.Join(o.addrs, ", "))

	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range c.Messages() {
			s.incoming(m)
		}
	}()
	// Closing the client closes Messages, which ends the printer; sends
	// in flight end with it. Nothing is written after run returns.
	defer func() {
		c.Close()
		<-done
		s.sends.Wait()
	}()

	lines := make(chan string)
	readErr := make(chan error, 1)
	next := make(chan struct{}, 1) // the loop wants the next line
	next <- struct{}{}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// Reads a line only when the loop asks for one: a read begun
		// after /quit would draw a prompt under the last one. Ends when
		// stdin does, when run returns, or (for a read in progress, which
		// cannot be interrupted) at the next line after that.
		for {
			select {
			case <-next:
			case <-stop:
				return
			}
			line, err := scr.readLine()
			if err != nil {
				readErr <- err
				return
			}
			select {
			case lines <- line:
			case <-stop:
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.Done():
			if err := c.Err(); err != nil && !errors.Is(err, client.ErrClosed) {
				s.out.printf("! %s", plain(err))
				s.out.printf("* stopped: retrying would not help")
				return &shownError{err}
			}
			return nil
		case <-readErr:
			return nil // end of input: Ctrl-D, Ctrl-C, or a closed pipe
		case line := <-lines:
			if quit := s.command(ctx, line); quit {
				return nil
			}
			next <- struct{}{}
		}
	}
}
