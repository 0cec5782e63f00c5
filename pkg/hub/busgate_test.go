package hub_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
)

// TestPublishesWaitForTheBus: while the bus has lost its subscriptions
// (HandleLost), a send is held, not stored; once the bus reports back and
// the rooms are checked, it is stored. A send whose deadline passes first
// is told it was not sent, and indeed is not.
func TestPublishesWaitForTheBus(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) {
		c.BusSettle = 50 * time.Millisecond
		c.PositionCheckInterval = time.Hour
	})
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	_, fb := e.join(t, hub.JoinOptions{User: "b"}, false)
	e.hub.HandleLost()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := a.Publish(ctx, &api.Message{Text: "too late"})
	cancel()
	var he *hub.Error
	if !errors.As(err, &he) || he.Kind != hub.KindUnavailable {
		t.Fatalf("publish while the bus is lost = %v; want KindUnavailable", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Publish(context.Background(), &api.Message{Text: "held"}) }()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("publish returned %v while the bus was lost", err)
	default:
	}
	if pos, _ := e.log.Position(context.Background(), hub.DefaultRoom); pos.Seq != 0 {
		t.Fatalf("log at %+v while the bus was lost; want nothing stored", pos)
	}
	// A loss reported again before the gate opened keeps it closed.
	e.hub.HandleReconnect()
	e.hub.HandleLost()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("publish returned %v after a second loss", err)
	default:
	}
	e.hub.HandleReconnect()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("publish still held after the bus came back")
	}
	if m := fb.next(t); m.GetText() != "held" || m.GetSeq() != 1 {
		t.Fatalf("got %v; want the held message as seq 1", m)
	}
}

// TestPipelinedSendWaitsForTheBus: the pipelined path is held by the gate
// too, and a send whose publish timeout passes there is answered with an
// error naming its client id (it was not sent).
func TestPipelinedSendWaitsForTheBus(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) {
		c.PublishTimeout = 100 * time.Millisecond
		c.PositionCheckInterval = time.Hour
	})
	a, fa := e.join(t, hub.JoinOptions{User: "a", Events: true}, false)
	fa.nextKind(t, api.Kind_KIND_LIVE)
	e.hub.HandleLost()
	got := make(chan error, 1)
	err := a.PublishAsync(context.Background(), &api.Message{Text: "held", ClientId: "c1"}, func(err error) *api.Error {
		got <- err
		return &api.Error{Code: 14, Message: "unavailable"}
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		var he *hub.Error
		if !errors.As(err, &he) || he.Kind != hub.KindUnavailable {
			t.Fatalf("done(%v); want KindUnavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("done was not called")
	}
	if m := fa.nextKind(t, api.Kind_KIND_ERROR); m.GetClientId() != "c1" {
		t.Fatalf("error event %v; want client id c1", m)
	}
	if pos, _ := e.log.Position(context.Background(), hub.DefaultRoom); pos.Seq != 0 {
		t.Fatalf("log at %+v; want nothing stored", pos)
	}
}
