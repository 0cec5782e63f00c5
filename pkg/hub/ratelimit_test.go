package hub_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
	"example.com/chat/pkg/ratelimit"
)

// A fixed clock: nothing refills unless the test moves it.
func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestSendLimit(t *testing.T) {
	t.Parallel()
	now := time.Unix(1e9, 0)
	e := newHub(t, func(c *hub.Config) { c.SendRate, c.SendBurst, c.Now = 2, 3, fixedClock(now) })
	s, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	ctx := context.Background()
	// The burst, shared by the session's messages, its typing events and
	// the user's REST sends.
	if err := s.Publish(ctx, &api.Message{Text: "1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(ctx, &api.Message{Kind: api.Kind_KIND_TYPING}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.Publish(ctx, &api.Message{User: "a", Room: hub.DefaultRoom, Text: "rest"}); err != nil {
		t.Fatal(err)
	}
	for _, send := range []func() error{
		func() error { return s.Publish(ctx, &api.Message{Text: "4"}) },
		func() error {
			_, err := e.hub.Publish(ctx, &api.Message{User: "a", Room: hub.DefaultRoom, Text: "rest"})
			return err
		},
	} {
		var he *hub.Error
		if err := send(); !errors.As(err, &he) || he.Kind != hub.KindRateLimited || he.RetryAfterMs != 501 ||
			he.Msg != "rate limit: at most 2 messages per second (burst 3); retry in 501 ms" {
			t.Fatalf("over the burst: %v, want a rate limit with a 501 ms retry", err)
		}
	}
	// Another user has its own budget.
	if _, err := e.hub.Publish(ctx, &api.Message{User: "b", Room: hub.DefaultRoom, Text: "b"}); err != nil {
		t.Fatalf("b: %v", err)
	}
}

func TestSendLimitClosesAbusers(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.SendRate, c.SendBurst, c.Now = 1, 1, fixedClock(time.Unix(1e9, 0)) })
	s, ft := e.join(t, hub.JoinOptions{User: "a"}, false)
	ctx := context.Background()
	if err := s.Publish(ctx, &api.Message{Text: "ok"}); err != nil {
		t.Fatal(err)
	}
	// A client that ignores the retry hint is closed.
	var err error
	for i := 0; i < 1000 && !errors.Is(err, hub.ErrClosed); i++ {
		err = s.Publish(ctx, &api.Message{Text: "again"})
	}
	if !errors.Is(err, hub.ErrClosed) {
		t.Fatalf("after 1000 refused sends: %v, want the session closed", err)
	}
	select {
	case r := <-ft.closed:
		if r != hub.CloseAbuse {
			t.Fatalf("closed with %v, want %v", r, hub.CloseAbuse)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("transport not closed")
	}
}

// Two hubs on one shared limiter give a user one budget between them, and
// the refusal quotes the limiter's limit, not the hub's SendRate.
func TestSharedSendLimiter(t *testing.T) {
	t.Parallel()
	shared, err := ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: ratelimit.Limit{Rate: 1.0 / 60, Burst: 2}})
	if err != nil {
		t.Fatal(err)
	}
	var hubs []*env
	for range 2 {
		hubs = append(hubs, newHub(t, func(c *hub.Config) { c.SendLimiter = shared }))
	}
	ctx := context.Background()
	admitted := 0
	var last error
	for i := range 6 {
		_, err := hubs[i%2].hub.Publish(ctx, &api.Message{User: "a", Room: hub.DefaultRoom, Text: "x"})
		if err == nil {
			admitted++
		} else {
			last = err
		}
	}
	if admitted != 2 || last == nil || !strings.Contains(last.Error(), "at most 0.0166") || !strings.Contains(last.Error(), "burst 2") {
		t.Fatalf("%d admitted over two hubs (last refusal %v), want 2 and a refusal quoting the shared limit", admitted, last)
	}
	if got := hubs[0].hub.Config(); got.SendBurst != 2 {
		t.Fatalf("Config().SendBurst = %d, want the limiter's 2", got.SendBurst)
	}
}

// failing is a Limiter that cannot decide.
type failing struct{}

func (failing) Allow(context.Context, string, time.Time) (ratelimit.Decision, error) {
	return ratelimit.Decision{}, errors.New("no limiter")
}
func (failing) Limit() ratelimit.Limit { return ratelimit.Limit{Rate: 1, Burst: 1} }

func TestSendLimiterError(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.SendLimiter = failing{} })
	s, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	var he *hub.Error
	if err := s.Publish(context.Background(), &api.Message{Text: "x"}); !errors.As(err, &he) || he.Kind != hub.KindUnavailable {
		t.Fatalf("with a failing limiter: %v, want KindUnavailable", err)
	}
}
