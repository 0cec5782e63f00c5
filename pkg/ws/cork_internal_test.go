package ws

import (
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
)

// deadlineConn records the write deadlines set on it.
type deadlineConn struct {
	captureConn
	set []time.Time
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

// TestBatchDeadlineIsSetOncePerHalfTimeout: back-to-back batches share
// one deadline (no timer update per delivery) that leaves each at least
// half the timeout; a library write clears it first, so that a ping long
// after the last batch is not cut by a deadline in the past.
func TestBatchDeadlineIsSetOncePerHalfTimeout(t *testing.T) {
	t.Parallel()
	var conn deadlineConn
	rc := &rawConn{Conn: &conn}
	frames := []*hub.Frame{hub.NewFrame(&api.Message{User: "u", Text: "hi"})}
	const timeout = time.Hour
	start := time.Now()
	for range 100 {
		if err := rc.writeFrames(frames, modeSingle, timeout); err != nil {
			t.Fatal(err)
		}
	}
	if len(conn.set) != 1 {
		t.Fatalf("100 batches set %d deadlines, want 1", len(conn.set))
	}
	if d := conn.set[0].Sub(start); d < timeout/2 || d > timeout+time.Minute {
		t.Fatalf("deadline %v after the first batch, want about %v", d, timeout)
	}
	if _, err := rc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if len(conn.set) != 2 || !conn.set[1].IsZero() {
		t.Fatalf("a library write after batches left deadlines %v, want the last one cleared", conn.set)
	}
	if _, err := rc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if len(conn.set) != 2 {
		t.Fatalf("a second library write set a deadline again: %v", conn.set)
	}
	// A batch whose deadline is less than half the timeout away gets a
	// fresh one.
	if err := rc.writeFrames(frames, modeSingle, timeout); err != nil {
		t.Fatal(err)
	}
	rc.deadline = time.Now().Add(timeout/2 - time.Second)
	if err := rc.writeFrames(frames, modeSingle, timeout); err != nil {
		t.Fatal(err)
	}
	if len(conn.set) != 4 {
		t.Fatalf("deadlines %v, want a fresh one for the batch past half the timeout", conn.set)
	}
}
