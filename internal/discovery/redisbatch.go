package discovery

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Puts are written in batches (group commit): a Put queues its record and
// waits; a flusher takes every queued Put (up to maxPutBatch) and writes
// them in one pipeline. At most maxPutFlushers pipelines are in flight, so
// while they are, new Puts gather into the next batch: an idle registry
// writes each Put at once, a busy one in fewer, larger round trips. The
// counters of a batch are merged (one PFADD and one PEXPIRE per count
// shard, not per Put). Lookups do not use this path: they take their own
// connections from the client's pool, and the flushers hold at most
// maxPutFlushers of them (per Cluster node), so a burst of refreshes never
// takes every connection from the connects.
//
// The queue is bounded (maxPutQueue): its callers are, a server's readers
// each wait for one Put at a time, but a Put beyond it fails at once with
// ErrUnavailable rather than grow the queue while Redis is slow.
const (
	maxPutBatch    = 512
	maxPutFlushers = 2
	maxPutQueue    = 1 << 16
)

// errPutQueueFull is the cause of a Put refused by a full queue.
var errPutQueueFull = errors.New("too many Puts waiting for Redis")

// putOp is one Put waiting for its pipeline.
type putOp struct {
	ctx   context.Context
	key   string
	body  []byte
	ttl   time.Duration
	addr  string // the 14 address bytes after fd4b
	shard byte
	sent  int64      // the record's Sent (Unix ms); > 0: a conditional put
	done  chan error // buffered: the flusher never blocks on a caller gone
}

// putQueue holds the Puts waiting for a flusher.
type putQueue struct {
	mu      sync.Mutex
	pending []*putOp
	running int // flushers
}

// enqueue queues op and starts a flusher when fewer than maxPutFlushers
// run. It reports false, queueing nothing, when the queue is full.
func (r *Redis) enqueue(op *putOp) bool {
	q := &r.puts
	q.mu.Lock()
	if len(q.pending) >= maxPutQueue {
		q.mu.Unlock()
		return false
	}
	q.pending = append(q.pending, op)
	start := q.running < maxPutFlushers
	if start {
		q.running++
	}
	q.mu.Unlock()
	if start {
		go r.flushPuts()
	}
	return true
}

// flushPuts writes queued batches until the queue is empty, then exits.
func (r *Redis) flushPuts() {
	q := &r.puts
	for {
		q.mu.Lock()
		n := min(len(q.pending), maxPutBatch)
		if n == 0 {
			q.running--
			q.mu.Unlock()
			return
		}
		batch := make([]*putOp, n)
		copy(batch, q.pending)
		rest := copy(q.pending, q.pending[n:])
		clear(q.pending[rest:])
		q.pending = q.pending[:rest]
		q.mu.Unlock()
		r.writePuts(batch)
	}
}

// writePuts writes one batch in one pipeline and answers each Put. A Put
// whose caller gave up (its context ended) is left out. The pipeline runs
// until the latest deadline of the batch's Puts, so no Put is cut short
// by another's deadline and none outlives its own caller's by more.
func (r *Redis) writePuts(batch []*putOp) {
	live := batch[:0]
	var (
		deadline    time.Time
		noDeadline  bool
		shardUsed   [countShards][]any
		shardPFAdds [countShards]*redis.IntCmd
		shardExpire [countShards]*redis.BoolCmd
		shardZAdds  [countShards]*redis.IntCmd
		shardCards  [countShards]*redis.IntCmd // index size after the batch
		shardTTL    [countShards]time.Duration // longest Put TTL
	)
	for _, op := range batch {
		if err := op.ctx.Err(); err != nil {
			op.done <- unavailable("put", err)
			continue
		}
		live = append(live, op)
		if d, ok := op.ctx.Deadline(); !ok {
			noDeadline = true
		} else if d.After(deadline) {
			deadline = d
		}
		shardUsed[op.shard] = append(shardUsed[op.shard], op.addr)
		shardTTL[op.shard] = max(shardTTL[op.shard], op.ttl)
	}
	if len(live) == 0 {
		return
	}
	ctx := context.Background()
	if !noDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	now := r.now()
	bucket := now.UnixNano() / int64(r.window)
	sets := make([]redis.Cmder, len(live))
	_, _ = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, op := range live {
			sets[i] = r.putCmd(ctx, p, op, false)
		}
		for s, members := range shardUsed {
			if len(members) == 0 {
				continue
			}
			ck := r.countKey(byte(s), bucket)
			shardPFAdds[s] = p.PFAdd(ctx, ck, members...)
			shardExpire[s] = p.PExpire(ctx, ck, 3*r.window)
			if r.perShard == 0 {
				continue
			}
			// The expiry index: file the batch's peers (a refresh moves
			// its peer to the far end), drop the entries whose records
			// expired by themselves, and count what is left.
			x := r.indexKey(byte(s))
			zs := make([]redis.Z, 0, len(members))
			for _, op := range live {
				if int(op.shard) == s {
					zs = append(zs, redis.Z{Score: float64(now.Add(op.ttl).UnixMilli()), Member: op.addr})
				}
			}
			shardZAdds[s] = p.ZAdd(ctx, x, zs...)
			p.ZRemRangeByScore(ctx, x, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
			p.PExpire(ctx, x, shardTTL[s]+time.Second)
			shardCards[s] = p.ZCard(ctx, x)
		}
		return nil
	}) // each command keeps its own error, read below
	r.putsWithoutScript(ctx, live, sets)
	evictErr := r.trimIndex(ctx, &shardCards)
	errs := make([]error, len(live))
	for i, op := range live {
		err := sets[i].Err()
		if err == nil && refused(sets[i]) {
			errs[i] = fmt.Errorf("redis registry: %w", ErrNotNewer)
			continue
		}
		if err == nil {
			err = shardPFAdds[op.shard].Err()
		}
		if err == nil {
			err = shardExpire[op.shard].Err()
		}
		if err == nil && shardCards[op.shard] != nil {
			err = errors.Join(shardZAdds[op.shard].Err(), shardCards[op.shard].Err())
			if err == nil && evictErr != nil {
				errs[i] = evictErr
				continue
			}
		}
		if err != nil {
			errs[i] = unavailable("put", err)
		}
	}
	for i, op := range live {
		op.done <- errs[i]
	}
}

// trimIndex pops, from each shard's expiry index that a batch took over
// the cap, the entries closest to expiry, and deletes their records.
func (r *Redis) trimIndex(ctx context.Context, cards *[countShards]*redis.IntCmd) error {
	var over [countShards]int64
	some := false
	for s, c := range cards {
		if c != nil && c.Err() == nil && c.Val() > r.perShard {
			over[s], some = c.Val()-r.perShard, true
		}
	}
	if !some {
		return nil
	}
	var pops []*redis.ZSliceCmd
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s, n := range over {
			if n > 0 {
				pops = append(pops, p.ZPopMin(ctx, r.indexKey(byte(s)), n))
			}
		}
		return nil
	})
	if err != nil {
		return unavailable("evict", err)
	}
	var keys []string
	for _, c := range pops {
		keys = append(keys, r.poppedKeys(c.Val())...)
	}
	if len(keys) == 0 {
		return nil
	}
	return r.evict(ctx, keys)
}

// putCmd queues the write of op: a SET, or for a Put with a send time the
// conditional put script (putIfNewer), by its hash or, with eval, by its
// source.
func (r *Redis) putCmd(ctx context.Context, p redis.Pipeliner, op *putOp, eval bool) redis.Cmder {
	if op.sent <= 0 {
		return p.Set(ctx, op.key, op.body, op.ttl)
	}
	keys := []string{op.key}
	if eval {
		return r.putIfNewer.Eval(ctx, p, keys, op.body, op.ttl.Milliseconds(), op.sent)
	}
	return r.putIfNewer.EvalSha(ctx, p, keys, op.body, op.ttl.Milliseconds(), op.sent)
}

// putsWithoutScript sends again, with the script's source, the conditional
// puts that a Redis without the script cached (restarted, flushed, a new
// Cluster node) refused with NOSCRIPT; EVAL caches it for the next batch.
func (r *Redis) putsWithoutScript(ctx context.Context, live []*putOp, sets []redis.Cmder) {
	var again []int
	for i, c := range sets {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return
	}
	_, _ = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, i := range again {
			sets[i] = r.putCmd(ctx, p, live[i], true)
		}
		return nil
	}) // each command keeps its own error
}

// refused reports whether a conditional put left the stored record alone.
func refused(c redis.Cmder) bool {
	sc, ok := c.(*redis.Cmd)
	if !ok {
		return false
	}
	n, err := sc.Int64()
	return err == nil && n == 0
}
