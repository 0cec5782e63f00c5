package pubsub

import (
	"context"
	"fmt"
)

// Submitter is implemented by a Broker that can take a publish without its
// caller waiting for the answer: a sender's next message is handed over
// while the previous one is still on its way to the log, so one sender's
// messages share round trips instead of paying one each. Memory, Redis and
// RedisCluster implement it; Publish is Submit followed by Wait.
type Submitter interface {
	// Submit hands a publish of data to room over to the broker, with the
	// same options and meaning as Broker.Publish, and returns its Pending
	// answer. It returns once the publish is queued: it blocks only while
	// the broker's queue is full (back-pressure), until ctx ends or the
	// broker closes, which complete the Pending with an error.
	//
	// Order: publishes to one room submitted one after the other (each
	// Submit returned before the next began, as from one goroutine) are
	// stored in that order, their sequence ids increasing, whether or not
	// their answers were waited for in between. If one of them fails, the
	// later ones may still be stored.
	//
	// ctx bounds the publish as it bounds Publish: the caller keeps it
	// alive until it has waited for the answer (Pending.Wait). data must
	// not be modified until then.
	Submit(ctx context.Context, room string, data []byte, opts PublishOptions) *Pending
}

// Pending is the answer to a Submit, to come. It is completed once, by the
// broker; any number of goroutines may wait for it.
type Pending struct {
	room  string
	done  chan struct{}   // closed by complete
	abort <-chan struct{} // closed when the broker closes; nil if it never aborts
	res   PublishResult
	err   error
}

// NewPending returns a Pending of a publish to room, for a Broker to
// complete with Complete (Brokers outside this package, fakes in tests).
func NewPending(room string) *Pending {
	return &Pending{room: room, done: make(chan struct{})}
}

// Completed returns a Pending already completed with res and err, for a
// Broker that answers at once (Memory, or a refusal before queueing).
func Completed(res PublishResult, err error) *Pending {
	return &Pending{done: closedDone, res: res, err: err}
}

// closedDone is the Done channel of every Pending made by Completed.
var closedDone = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Complete records the publish's answer and wakes its waiters. The Broker
// that returned p calls it exactly once; err follows Publish's contract (an
// error means the message may not have been stored).
func (p *Pending) Complete(res PublishResult, err error) { p.complete(res, err) }

func (p *Pending) complete(res PublishResult, err error) {
	p.res, p.err = res, err
	close(p.done)
}

// Done is closed once the answer is known. It is not closed when the
// broker closes first: Wait reports that.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Wait returns the publish's answer: what Publish would have returned. It
// returns an error wrapping ErrUnavailable (and ctx's error) when ctx ends
// first, or ErrClosed when the broker closes first: the message may or may
// not be stored, as for any error of Publish.
func (p *Pending) Wait(ctx context.Context) (PublishResult, error) {
	select {
	case <-p.done:
		return p.res, p.err
	default:
	}
	select {
	case <-p.done:
		return p.res, p.err
	case <-p.abort:
		select {
		case <-p.done: // answered as the broker closed
			return p.res, p.err
		default:
		}
		return PublishResult{}, fmt.Errorf("pubsub: publish %q: %w: %w", p.room, ErrUnavailable, ErrClosed)
	case <-ctx.Done():
		// The message may still be stored: the caller reports an error
		// and the client retries with its idempotency key.
		return PublishResult{}, fmt.Errorf("pubsub: publish %q: %w: %w", p.room, ErrUnavailable, ctx.Err())
	}
}
