// Command chat is a terminal chat client: the mobile path, for people. It
// connects to one or more nodes over gRPC, joins a room, prints history and
// live messages, sends what you type, shows typing and presence, and
// reconnects and resumes by itself.
//
//	chat -addr localhost:50051 -user alice -room general
//
// Type a line to send it. Commands: /who (who is here), /typing (tell the
// room you are typing), /quit.
package main

import (
	"bufio"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"example.com/chat/api"
	"example.com/chat/pkg/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Getenv); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addrs := fs.String("addr", "localhost:50051", "comma-separated node gRPC addresses, tried in turn")
	user := fs.String("user", getenv("USER"), "your user name (with a token, the token's subject wins)")
	room := fs.String("room", "general", "room to join")
	token := fs.String("token", getenv("CHAT_TOKEN"), "JWT (env CHAT_TOKEN)")
	caFile := fs.String("tls-ca", "", "PEM CA: connect with TLS, verifying the server with it")
	history := fs.Int("history", 20, "messages of history to show on join")
	heartbeat := fs.Duration("heartbeat-timeout", 45*time.Second, "give a node up (reconnect to the next address, resume) after this long without a frame from it; keep it above 1.5 × the nodes' -heartbeat")
	sendTimeout := fs.Duration("send-timeout", 30*time.Second, "how long a line may wait for its acknowledgement, across reconnects, before it is reported as not sent")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var tc *tls.Config
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("chat: -tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("chat: -tls-ca: no certificate in %s", *caFile)
		}
		tc = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	list := strings.Split(*addrs, ",")
	c, err := client.Dial(client.Config{
		Addrs: list, User: *user, Room: *room, Token: *token, TLS: tc, History: *history,
		HeartbeatTimeout: *heartbeat,
	})
	if err != nil {
		return err
	}
	out := &printer{w: stdout}
	out.printf("* joining %s as %s via %s", *room, *user, list[0])

	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range c.Messages() {
			out.message(m)
		}
	}()
	// Closing the client closes Messages, which ends the printer: nothing
	// is written to stdout after run returns.
	defer func() {
		c.Close()
		<-done
	}()

	lines := make(chan string)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// Ends when stdin does, or at its next line once run has
		// returned; a read in progress cannot be interrupted.
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-stop:
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok {
				return nil
			}
			line = strings.TrimSpace(line)
			switch {
			case line == "":
			case line == "/quit":
				return nil
			case line == "/typing":
				if _, err := c.SendMessage(ctx, &api.Message{Kind: api.Kind_KIND_TYPING}); err != nil {
					out.printf("! %v", err)
				}
			case line == "/who":
				who(ctx, list[0], *room, *token, tc, out)
			default:
				sctx, cancel := context.WithTimeout(ctx, *sendTimeout)
				if _, err := c.Send(sctx, line); err != nil {
					out.printf("! not sent: %v", err)
				}
				cancel()
			}
		}
	}
}

// who prints the room's presence.
func who(ctx context.Context, addr, room, token string, tc *tls.Config, out *printer) {
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		out.printf("! %v", err)
		return
	}
	defer cc.Close()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := api.NewChatClient(cc).Presence(ctx, &api.PresenceRequest{Room: room})
	if err != nil {
		out.printf("! %v", err)
		return
	}
	out.printf("* %d here: %s", r.GetCount(), strings.Join(r.GetUsers(), ", "))
}
