package pubsub

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Stored publishes are batched: concurrent Publish calls are gathered by one
// goroutine and sent as one pipeline of script calls, so under load a
// node's publishes cost one round trip per batch instead of one each. A
// lone publish is sent at once, in a pipeline of one. Redis runs the
// scripts of a pipeline one after the other, each still atomic, so
// ordering by sequence id is unchanged.

// maxPublishBatch bounds one pipeline.
const maxPublishBatch = 128

// publishReq is one stored publish waiting for its batch.
type publishReq struct {
	ctx  context.Context
	keys []string
	args []any
	done chan publishRes // buffered: the batcher never waits on a caller
}

type publishRes struct {
	reply []any
	err   error
}

// batchPublishes is the batcher goroutine; Close stops it.
func (b *Redis) batchPublishes() {
	defer b.wg.Done()
	batch := make([]*publishReq, 0, maxPublishBatch)
	for {
		select {
		case <-b.closing:
			return
		case r := <-b.pubs:
			batch = append(batch[:0], r)
		}
	more:
		for len(batch) < maxPublishBatch {
			select {
			case r := <-b.pubs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		b.runBatch(batch)
		clear(batch)
	}
}

// runBatch sends batch as one pipeline of EVALSHA calls; scripts not yet
// loaded (a new or restarted Redis) are retried with EVAL, which loads
// them.
func (b *Redis) runBatch(batch []*publishReq) {
	// The batch outlives no caller: it is bounded by the longest deadline
	// among them (go-redis's own timeouts bound it too).
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout(batch))
	defer cancel()
	cmds := make([]*redis.Cmd, len(batch))
	// waits[i] is the WAIT that ends the pipeline which ran batch[i]'s
	// script last (nil without MinReplicas): it must go out on the same
	// connection, after the script, to count the replicas that have it.
	waits := make([]*redis.Cmd, len(batch))
	var wait *redis.Cmd
	_, _ = b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range batch {
			cmds[i] = publishScript.EvalSha(ctx, p, r.keys, r.args...)
		}
		wait = b.appendWait(ctx, p)
		return nil
	})
	var retry []int
	for i, c := range cmds {
		waits[i] = wait
		if err := c.Err(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		_, _ = b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range retry {
				cmds[i] = publishScript.Eval(ctx, p, batch[i].keys, batch[i].args...)
			}
			wait = b.appendWait(ctx, p)
			return nil
		})
		for _, i := range retry {
			waits[i] = wait
		}
	}
	for i, r := range batch {
		reply, err := cmds[i].Slice()
		if err == nil {
			err = b.checkWait(waits[i])
		}
		r.done <- publishRes{reply: reply, err: err}
	}
}

func batchTimeout(batch []*publishReq) time.Duration {
	d := 5 * time.Second
	for _, r := range batch {
		if dl, ok := r.ctx.Deadline(); ok {
			d = max(d, time.Until(dl))
		}
	}
	return d
}

// runPublish queues one stored publish for the batcher and waits for its
// reply, or for ctx or Close.
func (b *Redis) runPublish(ctx context.Context, keys []string, args ...any) ([]any, error) {
	r := &publishReq{ctx: ctx, keys: keys, args: args, done: make(chan publishRes, 1)}
	select {
	case b.pubs <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.closing:
		return nil, ErrClosed
	}
	select {
	case res := <-r.done:
		return res.reply, res.err
	case <-b.closing:
		return nil, ErrClosed
	case <-ctx.Done():
		// The message may still be stored: the caller reports an error
		// and the client retries with its idempotency key.
		return nil, ctx.Err()
	}
}
