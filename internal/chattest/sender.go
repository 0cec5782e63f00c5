package chattest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"example.com/chat/api"
)

// senderTimeout bounds how long Wait and Stop wait for a sender to finish.
const senderTimeout = 60 * time.Second

// Sender sends numbered messages in the background, one at a time (each
// Send waits for its ack, across retries), and records each acked message
// (user, text, and the seq and epoch of its ack).
type Sender struct {
	m    *Member
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	acks []*api.Message
	err  error
}

// StartSender has m send prefix-0001, prefix-0002, ... until n are acked
// (n = 0: until stopped), a send fails, or ctx ends.
func StartSender(ctx context.Context, m *Member, prefix string, n int) *Sender {
	s := &Sender{m: m, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for i := 1; n == 0 || i <= n; i++ {
			select {
			case <-s.stop:
				return
			default:
			}
			text := fmt.Sprintf("%s-%04d", prefix, i)
			ack, err := m.Send(ctx, text)
			s.mu.Lock()
			if err != nil {
				s.err = fmt.Errorf("%s: send %d: %w", m.User, i, err)
			} else {
				s.acks = append(s.acks, &api.Message{User: m.User, Text: text, Seq: ack.GetSeq(), Epoch: ack.GetEpoch()})
			}
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return s
}

// Wait waits (up to 60 s) for a sender of n > 0 messages to finish, fails
// the test if a send failed, and returns the acks.
func (s *Sender) Wait(tb testing.TB) []*api.Message {
	tb.Helper()
	select {
	case <-s.done:
	case <-time.After(senderTimeout):
		tb.Fatalf("%s: sender did not finish within %v (%d acked)", s.m.User, senderTimeout, len(s.Acked()))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		tb.Fatal(s.err)
	}
	return slices.Clone(s.acks)
}

// Stop stops the sender after its current send, then waits for it as
// Wait does. It may be called once.
func (s *Sender) Stop(tb testing.TB) []*api.Message {
	tb.Helper()
	close(s.stop)
	return s.Wait(tb)
}

// Acked returns the acks so far.
func (s *Sender) Acked() []*api.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.acks)
}

// WaitAcked waits (up to 30 s) until the sender has at least n acks and
// returns them.
func (s *Sender) WaitAcked(tb testing.TB, n int) []*api.Message {
	tb.Helper()
	var acks []*api.Message
	Eventually(tb, 30*time.Second, func() error {
		if acks = s.Acked(); len(acks) < n {
			s.mu.Lock()
			err := s.err
			s.mu.Unlock()
			return fmt.Errorf("%s: %d acks, waiting for %d (err %v)", s.m.User, len(acks), n, err)
		}
		return nil
	})
	return acks
}
