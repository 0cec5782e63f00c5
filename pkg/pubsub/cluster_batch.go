package pubsub

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisCluster batches publishes as Redis does (redis_batch.go), with one
// batcher per lane: a lane is a fixed range of clusterSlots/clusterLanes
// slots, and a room always goes to the lane of its slot, so its publishes
// stay in one queue and in order. Lanes keep a master that stops answering
// from stalling every room: its batch waits out go-redis's timeouts, but
// only the lanes holding its slots wait with it (masters own ranges of
// slots, so most lanes belong to one master).
//
// Without MinReplicas a lane's batch is one cluster pipeline: go-redis
// splits it by master, sends the parts concurrently (each in order) and
// follows MOVED and ASK. With MinReplicas it is split here by master, each
// part a pipeline on that master's connection ending with WAIT, sent one
// after the other (see redis_wait.go).

const (
	clusterSlots = 16384
	clusterLanes = 16
)

// laneOf returns the lane of room: that of the slot of its hash tag.
func laneOf(room string) int {
	return ClusterSlot("{"+room+"}") * clusterLanes / clusterSlots
}

// ClusterSlot returns the Redis Cluster slot of key: CRC-16/XMODEM of its
// hash tag (the part between the first "{" and the next "}", if not
// empty) or of the whole key, modulo 16384, as Redis computes it.
func ClusterSlot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc % clusterSlots)
}

// batchLane is the batcher goroutine of lane q; Close stops it.
func (b *RedisCluster) batchLane(q <-chan *publishReq) {
	defer b.wg.Done()
	batch := make([]*publishReq, 0, maxPublishBatch)
	for {
		var ok bool
		if batch, ok = gather(q, b.ctx.Done(), batch); !ok {
			return
		}
		b.runBatch(batch)
		clear(batch)
	}
}

// runBatch sends one lane's batch and answers every request.
func (b *RedisCluster) runBatch(batch []*publishReq) {
	// Close cancels a batch in flight: its requests are answered as
	// aborted anyway (Pending.Wait).
	ctx, cancel := context.WithTimeout(b.ctx, batchTimeout(batch))
	defer cancel()
	var replies []publishRes
	if b.cfg.MinReplicas > 0 {
		replies = b.runReplicated(ctx, batch)
	} else {
		replies = runPipeline(ctx, b.client.Pipelined, shardedPublishScript, nil, nil, batch)
	}
	failed := false
	for i, r := range batch {
		if err := replies[i].err; err != nil && !failed {
			b.failed(err)
			failed = true
		}
		r.finish(replies[i].reply, replies[i].err)
	}
}

// runReplicated sends batch split by master: each part as one pipeline on
// the client of the master that owns its rooms' slots, ending with WAIT
// (publishReplicated's reasons, in redis_wait.go). Parts keep the batch's
// order, so a room's publishes (all in one part) keep theirs.
func (b *RedisCluster) runReplicated(ctx context.Context, batch []*publishReq) []publishRes {
	out := make([]publishRes, len(batch))
	type part struct {
		master *redis.Client
		idx    []int
	}
	var parts []*part
	byMaster := map[*redis.Client]*part{}
	for i, r := range batch {
		master, err := b.client.MasterForKey(ctx, r.channel) // the room's slot, like its keys
		if err != nil {
			out[i].err = err
			continue
		}
		p := byMaster[master]
		if p == nil {
			p = &part{master: master}
			byMaster[master] = p
			parts = append(parts, p)
		}
		p.idx = append(p.idx, i)
	}
	for _, p := range parts {
		sub := make([]*publishReq, len(p.idx))
		for j, i := range p.idx {
			sub[j] = batch[i]
		}
		replies := b.publishReplicated(ctx, p.master, sub)
		for j, i := range p.idx {
			out[i] = replies[j]
		}
	}
	return out
}
