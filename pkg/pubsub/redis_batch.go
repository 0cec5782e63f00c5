package pubsub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/pkg/history"
)

// Publishes are batched: Submit queues each publish on a channel, and one
// goroutine (a batcher) takes what has gathered there and sends it as one
// pipeline of script calls (stored) and PUBLISH commands (ephemeral), so
// under load a node's publishes cost one round trip per batch instead of
// one each, and one sender's messages need not wait for each other's
// answers. A lone publish is sent at once, in a pipeline of one.
//
// Order: the batcher runs one batch after the other, and Redis runs the
// commands of a pipeline one after the other (each script atomic), so the
// order of the channel is the order of the log: a publish submitted after
// another is stored after it. Redis has one batcher; RedisCluster one per
// lane, a fixed range of slots (cluster_batch.go).

// maxPublishBatch bounds one pipeline, and each batcher's queue.
const maxPublishBatch = 128

// publishReq is one publish waiting for its batch; its Pending is its
// answer.
type publishReq struct {
	Pending
	ctx context.Context
	// A stored publish runs the script on keys with args; an ephemeral one
	// publishes payload on channel.
	ephemeral bool
	keys      []string
	args      []any
	channel   string
	payload   string
}

// newPublishReq builds the request of a publish of data to room with opts,
// in the layout keys and with the broker's settings, answered as aborted
// when abort closes.
func newPublishReq(ctx context.Context, k history.Keys, room string, data []byte, opts PublishOptions, historySize int, historyTTL, idemTTL time.Duration, abort <-chan struct{}) *publishReq {
	r := &publishReq{
		Pending: Pending{room: room, done: make(chan struct{}), abort: abort},
		ctx:     ctx,
		channel: k.Channel(room),
	}
	if opts.Ephemeral {
		r.ephemeral = true
		r.payload = formatPayload("", 0, data)
		return r
	}
	r.keys = []string{k.Meta(room), k.Log(room)}
	idem := opts.IdempotencyKey
	if idem == "" && opts.Effect != nil {
		idem = "ev-" + newEpoch() // the script's event keys come after it
	}
	if idem != "" {
		r.keys = append(r.keys, k.Idempotency(room, idem))
	}
	r.args = []any{data, newEpoch(), historySize,
		historyTTL.Milliseconds(), idempotencyTTL(idemTTL, opts).Milliseconds(), r.channel}
	if e := opts.Effect; e != nil {
		r.keys = append(r.keys, k.State(room), k.Events(room), k.Reactions(room, e.Epoch, e.Target))
		r.args = append(r.args, effectOps[e.Op], e.Target, e.Epoch, e.Text, e.Text+"\n"+e.User, e.Off, history.MaxReactions)
	}
	return r
}

// effectOps names history's Ops for the publish script.
var effectOps = map[history.Op]string{history.OpEdit: "edit", history.OpDelete: "delete", history.OpReact: "react"}

// enqueue puts r on the batcher's queue q, or completes it with an error
// when ctx ends or closing closes first.
func (r *publishReq) enqueue(q chan<- *publishReq, closing <-chan struct{}) {
	select {
	case q <- r:
	case <-r.ctx.Done():
		r.fail(r.ctx.Err())
	case <-closing:
		r.fail(ErrClosed)
	}
}

// fail completes r with the error of a publish that may not have been
// stored.
func (r *publishReq) fail(err error) {
	r.complete(PublishResult{}, fmt.Errorf("pubsub: publish %q: %w: %w", r.room, ErrUnavailable, err))
}

// finish completes r with the reply of its command.
func (r *publishReq) finish(reply []any, err error) {
	switch {
	case err != nil:
		r.fail(err)
	case r.ephemeral:
		r.complete(PublishResult{}, nil)
	default:
		res, err := parsePublishReply(reply)
		if err != nil {
			err = fmt.Errorf("pubsub: publish %q: %w", r.room, err)
		}
		r.complete(res, err)
	}
}

// gather waits for the first request on q, then takes what else is
// already there, up to maxPublishBatch, into batch. It returns false when
// closing closes first.
func gather(q <-chan *publishReq, closing <-chan struct{}, batch []*publishReq) ([]*publishReq, bool) {
	select {
	case <-closing:
		return batch, false
	case r := <-q:
		batch = append(batch[:0], r)
	}
	for len(batch) < maxPublishBatch {
		select {
		case r := <-q:
			batch = append(batch, r)
		default:
			return batch, true
		}
	}
	return batch, true
}

// batchPublishes is the batcher goroutine; Close stops it.
func (b *Redis) batchPublishes() {
	defer b.wg.Done()
	batch := make([]*publishReq, 0, maxPublishBatch)
	for {
		var ok bool
		if batch, ok = gather(b.pubs, b.closing, batch); !ok {
			return
		}
		b.runBatch(batch)
		clear(batch)
	}
}

// runBatch sends batch as one pipeline and answers every request.
func (b *Redis) runBatch(batch []*publishReq) {
	// The batch outlives no caller: it is bounded by the longest deadline
	// among them (go-redis's own timeouts bound it too).
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout(batch))
	defer cancel()
	var wait func(context.Context, redis.Pipeliner) *redis.Cmd
	if b.cfg.MinReplicas > 0 {
		wait = b.appendWait
	}
	replies := runPipeline(ctx, b.client.Pipelined, publishScript, wait, b.checkWait, batch)
	for i, r := range batch {
		r.finish(replies[i].reply, replies[i].err)
	}
}

// publishRes is the reply to one request of a batch.
type publishRes struct {
	reply []any
	err   error
}

// runPipeline sends batch as one pipeline through pipelined: a stored
// publish as script (EVALSHA; those Redis answers NOSCRIPT, a new or
// restarted Redis, are sent again with EVAL, which loads it), an ephemeral
// one as PUBLISH, or SPUBLISH when script is the sharded one. With wait
// (MinReplicas), each pipeline holding a stored publish ends with the WAIT
// wait queues, on the same connection after the scripts, and check judges
// it for each stored publish of that pipeline. It returns the reply of
// each request, by index.
func runPipeline(ctx context.Context, pipelined func(context.Context, func(redis.Pipeliner) error) ([]redis.Cmder, error),
	script *redis.Script, wait func(context.Context, redis.Pipeliner) *redis.Cmd, check func(*redis.Cmd) error, batch []*publishReq) []publishRes {
	sharded := script == shardedPublishScript
	cmds := make([]redis.Cmder, len(batch))
	// waits[i] is the WAIT that ends the pipeline which ran batch[i]'s
	// script last (nil without MinReplicas).
	waits := make([]*redis.Cmd, len(batch))
	send := func(idx []int, eval func(context.Context, redis.Scripter, []string, ...any) *redis.Cmd) {
		var w *redis.Cmd
		_, _ = pipelined(ctx, func(p redis.Pipeliner) error {
			stored := false
			for _, i := range idx {
				r := batch[i]
				switch {
				case !r.ephemeral:
					cmds[i] = eval(ctx, p, r.keys, r.args...)
					stored = true
				case sharded:
					cmds[i] = p.SPublish(ctx, r.channel, r.payload)
				default:
					cmds[i] = p.Publish(ctx, r.channel, r.payload)
				}
			}
			if stored && wait != nil {
				w = wait(ctx, p)
			}
			return nil
		})
		for _, i := range idx {
			if !batch[i].ephemeral {
				waits[i] = w
			}
		}
	}
	all := make([]int, len(batch))
	for i := range all {
		all[i] = i
	}
	send(all, script.EvalSha)
	var retry []int
	for i, c := range cmds {
		if err := c.Err(); err != nil && !batch[i].ephemeral && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		send(retry, script.Eval)
	}
	out := make([]publishRes, len(batch))
	for i, c := range cmds {
		if err := c.Err(); err != nil {
			out[i].err = err
			continue
		}
		if batch[i].ephemeral {
			continue
		}
		reply, err := c.(*redis.Cmd).Slice()
		if err == nil && waits[i] != nil {
			err = check(waits[i])
		}
		out[i] = publishRes{reply: reply, err: err}
	}
	return out
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

// isRedirect reports whether err is Redis's MOVED or ASK answer.
func isRedirect(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && (strings.HasPrefix(err.Error(), "MOVED") || strings.HasPrefix(err.Error(), "ASK"))
}
