package pubsub

import (
	"context"
	"fmt"
	"sync"

	"example.com/chat/pkg/history"
)

var (
	_ Broker    = (*Memory)(nil)
	_ Submitter = (*Memory)(nil)
)

// Memory is the embedded single-node bus: publishes go through a
// history.Memory log and are delivered synchronously to the handler.
type Memory struct {
	log *history.Memory

	mu      sync.RWMutex
	handler Handler
	subs    map[string]bool
	closed  bool
}

// NewMemory returns a bus whose stored publishes append to log.
func NewMemory(log *history.Memory) *Memory {
	return &Memory{log: log, subs: make(map[string]bool)}
}

// Register implements Broker.
func (m *Memory) Register(h Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.handler = h
}

// Publish implements Broker.
func (m *Memory) Publish(ctx context.Context, room string, data []byte, opts PublishOptions) (PublishResult, error) {
	if err := ctx.Err(); err != nil {
		return PublishResult{}, err
	}
	m.mu.RLock()
	closed := m.closed
	m.mu.RUnlock()
	if closed {
		return PublishResult{}, ErrClosed
	}
	if opts.Ephemeral {
		m.deliver(Envelope{Room: room, Data: data})
		return PublishResult{}, nil
	}
	// Delivering inside Append's callback keeps the room locked, so
	// concurrent publishes reach the handler in sequence order.
	res, err := m.log.AppendEvent(room, data, opts.IdempotencyKey, opts.Effect, func(r history.AppendResult) {
		if !r.Duplicate {
			m.deliver(Envelope{Room: room, Seq: r.Entry.Seq, Epoch: r.Epoch, Data: r.Entry.Data})
		}
	})
	if err != nil {
		return PublishResult{Epoch: res.Epoch}, fmt.Errorf("pubsub: publish %q: %w", room, err)
	}
	return PublishResult{Seq: res.Entry.Seq, Epoch: res.Epoch, Duplicate: res.Duplicate, Reacted: res.Reacted}, nil
}

// Submit implements Submitter. The publish runs at once, in the caller's
// goroutine, as Publish: the returned Pending is already completed.
func (m *Memory) Submit(ctx context.Context, room string, data []byte, opts PublishOptions) *Pending {
	return Completed(m.Publish(ctx, room, data, opts))
}

func (m *Memory) deliver(env Envelope) {
	m.mu.RLock()
	h, ok := m.handler, m.subs[env.Room]
	m.mu.RUnlock()
	if ok && h != nil {
		h.HandleMessage(env)
	}
}

// Subscribe implements Broker.
func (m *Memory) Subscribe(ctx context.Context, room string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.subs[room] = true
	return nil
}

// Unsubscribe implements Broker.
func (m *Memory) Unsubscribe(ctx context.Context, room string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.subs, room)
	return nil
}

// Close implements Broker.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.subs = map[string]bool{}
	return nil
}
