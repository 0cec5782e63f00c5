package client_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/ws"
)

// frameProxy forwards TCP connections to a node's HTTP listener and
// watches the WebSocket on them: the subprotocol the node selected and
// the data frames each side sent, by type. With strip set, it removes that
// subprotocol from the client's offer before the node sees it: the node
// then answers as one that does not speak it.
type frameProxy struct {
	addr  string
	strip string

	mu       sync.Mutex
	selected []string
	// frames counts data frames by direction ("down": node to client)
	// and opcode (1 text, 2 binary).
	frames map[string]int
}

func startFrameProxy(t *testing.T, target, strip string) *frameProxy {
	t.Helper()
	p := &frameProxy{strip: strip, frames: map[string]int{}}
	p.addr = startProxy(t, target, func(up, down net.Conn) {
		p.pipe(down, up, "up")
	}, func(down, up net.Conn) {
		p.pipe(up, down, "down")
	})
	return p
}

// pipe copies an HTTP head, then WebSocket frames, from src to dst,
// counting the frames.
func (p *frameProxy) pipe(src, dst net.Conn, dir string) {
	br := bufio.NewReader(src)
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		const name = "sec-websocket-protocol:"
		if len(line) > len(name) && strings.EqualFold(line[:len(name)], name) {
			v := line[len(name):]
			if dir == "up" && p.strip != "" {
				var keep []string
				for o := range strings.SplitSeq(strings.TrimSpace(v), ",") {
					if o = strings.TrimSpace(o); o != p.strip {
						keep = append(keep, o)
					}
				}
				line = "Sec-WebSocket-Protocol: " + strings.Join(keep, ",") + "\r\n"
			}
			if dir == "down" {
				p.mu.Lock()
				p.selected = append(p.selected, strings.TrimSpace(v))
				p.mu.Unlock()
			}
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	if _, err := io.WriteString(dst, head.String()); err != nil {
		return
	}
	for {
		var hdr [14]byte
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return
		}
		n, l := 2, uint64(hdr[1]&0x7F)
		switch l {
		case 126:
			n += 2
		case 127:
			n += 8
		}
		if hdr[1]&0x80 != 0 {
			n += 4 // the client's mask
		}
		if _, err := io.ReadFull(br, hdr[2:n]); err != nil {
			return
		}
		switch l {
		case 126:
			l = uint64(binary.BigEndian.Uint16(hdr[2:]))
		case 127:
			l = binary.BigEndian.Uint64(hdr[2:])
		}
		if op := hdr[0] & 0x0F; op == 1 || op == 2 {
			p.mu.Lock()
			p.frames[fmt.Sprintf("%s/%d", dir, op)]++
			p.mu.Unlock()
		}
		if _, err := dst.Write(hdr[:n]); err != nil {
			return
		}
		if _, err := io.CopyN(dst, br, int64(l)); err != nil {
			return
		}
	}
}

func (p *frameProxy) count(dir string, op int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frames[fmt.Sprintf("%s/%d", dir, op)]
}

// TestWebSocketPackedFrames: the WebSocket client offers chat.v1.proto;
// a node selects it, and the client reads a replay of 60 messages packed
// into a few binary frames and sends binary frames itself. Behind a node
// that does not select it (the offer stripped on the way, so the node
// selects chat.v1), the same client gets and sends one JSON text frame
// per message, and works the same.
func TestWebSocketPackedFrames(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t)
	if ws.SubprotocolProto != "chat.v1.proto" || auth.Subprotocol != "chat.v1" {
		t.Fatal("the client's subprotocol names are no longer the node's")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 60
	for _, tc := range []struct {
		name, strip, selected string
		op                    int
	}{
		{"packed", "", "chat.v1.proto", 2},
		{"fallback", "chat.v1.proto", "chat.v1", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			room := "packed-" + tc.name
			pub := dialLive(ctx, t, client.Config{Addrs: []string{a.GRPC}, User: "pub", Room: room, NoHistory: true})
			for i := range n {
				if _, err := pub.Send(ctx, fmt.Sprintf("m%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			p := startFrameProxy(t, a.HTTP, tc.strip)
			c := dialLive(ctx, t, client.Config{Addrs: []string{p.addr}, Transport: client.WebSocket, User: "reader-" + tc.name, Room: room, History: n})
			for i := 0; i < n; {
				select {
				case m := <-c.Messages():
					if m.GetKind() != api.Kind_KIND_MESSAGE {
						continue
					}
					if m.GetText() != fmt.Sprintf("m%d", i) || m.GetSeq() != uint64(i+1) {
						t.Fatalf("replay %d: got %v", i, m)
					}
					i++
				case <-ctx.Done():
					t.Fatalf("replay: %d of %d", i, n)
				}
			}
			text := "from " + tc.name
			if _, err := c.Send(ctx, text); err != nil {
				t.Fatal(err)
			}
			waitMessage(t, pub, room, text, 10*time.Second)

			p.mu.Lock()
			selected := p.selected
			p.mu.Unlock()
			if len(selected) != 1 || selected[0] != tc.selected {
				t.Fatalf("node selected %q, want %q", selected, tc.selected)
			}
			other := 3 - tc.op
			down, up := p.count("down", tc.op), p.count("up", tc.op)
			if p.count("down", other) != 0 || p.count("up", other) != 0 || up < 2 {
				t.Fatalf("frames %v: want every data frame of opcode %d", p.frames, tc.op)
			}
			// n replayed, KIND_LIVE, the ack: packed, far fewer frames.
			if tc.op == 2 && down > n/4 || tc.op == 1 && down < n+2 {
				t.Fatalf("%d frames down for %d messages", down, n+2)
			}
			t.Logf("%s: %d frames down, %d up", tc.name, down, up)
		})
	}
}
