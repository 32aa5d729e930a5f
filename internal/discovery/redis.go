package discovery

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keymesh/keymesh/internal/crypto"
)

// RedisOptions configures a Redis registry.
type RedisOptions struct {
	// Client reaches Redis: a single server, a Sentinel-managed master or a
	// Cluster, as built by redis.NewUniversalClient (see ParseRedisURL).
	// Required. The registry owns it from now on: Close closes it.
	Client redis.UniversalClient
	// Prefix starts every key, so deployments can share one Redis.
	// Default "km".
	Prefix string
	// CountWindow is the width of the time buckets Len counts peers in:
	// Len reports the peers that registered within the last one to two
	// windows. It should exceed the peers' refresh interval. Default 1m.
	CountWindow time.Duration
	// Now is the clock that picks count buckets. Default time.Now.
	Now func() time.Time
	// MaxRecords caps the registry at about this many records; 0 means no
	// cap. With a cap, each Put also files the peer in an expiry index (a
	// sorted set per count shard, about 100 bytes of Redis memory a peer;
	// one ZADD per shard and batch of Puts files them all) and, when new
	// peers take the index over MaxRecords/16, the records closest to
	// expiry are deleted (two batches that find the index over at once may
	// both delete, so the registry may briefly hold up to a batch fewer).
	// A refresh of a registered peer is never refused: it moves the peer
	// to the far end of the index. Needs Redis 5 or later (ZPOPMIN).
	MaxRecords int
}

// Redis is a registry in Redis, shared by every rendezvous instance that
// points at the same server or cluster. It is safe for concurrent use and
// recovers by itself when Redis comes back (the client redials).
//
// Keys (P is the prefix, A the 28 hex digits of the overlay address after
// fd4b, S one hex digit):
//
//	P:{A}:p           the record (stored form of codec.go), TTL = Put's ttl
//	P:{cntS}:c:B      HyperLogLog of the addresses put in count window B
//	P:{cntS}:x        with MaxRecords: sorted set of the addresses (14 bytes)
//	                  scored by their records' expiry (Unix ms)
//
// The record is keyed by the overlay address, which both lookups know: Get
// derives it from the peer ID (one SHA-256) and checks the ID inside, and
// GetByAddr uses it directly. So a peer has one key, Put is one SET (or,
// for a record with a send time, one EVALSHA of a script that GETs, compares
// and SETs that key), a lookup is one GET, and no index key can outlive or
// miss its record. The
// braces are Cluster hash tags: each peer's keys (this one, and any a later
// version adds) share one slot, and every command touches one slot only.
// The counters are spread over 16 tags so that no single slot takes every
// Put; Len sums one PFCOUNT per tag.
//
// Every failure to talk to Redis wraps ErrUnavailable; a missing peer is
// ErrNotFound.
type Redis struct {
	c        redis.UniversalClient
	prefix   string
	window   time.Duration
	now      func() time.Time
	perShard int64 // index entries kept per count shard; 0: no cap
	evicted  atomic.Uint64
	puts     putQueue
	// putIfNewer is the conditional put (putIfNewerLua).
	putIfNewer *redis.Script
}

var _ Registry = (*Redis)(nil)

const countShards = 16

// NewRedis checks that Redis answers and returns the registry. When Redis
// does not answer, the error wraps ErrUnavailable and the client is left
// open for the caller to retry or close.
func NewRedis(ctx context.Context, opts RedisOptions) (*Redis, error) {
	if opts.Client == nil {
		return nil, errors.New("discovery: RedisOptions.Client is nil: build one with redis.NewUniversalClient")
	}
	r := &Redis{c: opts.Client, prefix: opts.Prefix, window: opts.CountWindow, now: opts.Now,
		putIfNewer: redis.NewScript(putIfNewerLua)}
	if opts.MaxRecords > 0 {
		r.perShard = int64(max(1, opts.MaxRecords/countShards))
	}
	if r.prefix == "" {
		r.prefix = "km"
	}
	if r.window <= 0 {
		r.window = time.Minute
	}
	if r.now == nil {
		r.now = time.Now
	}
	if err := r.Ping(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

func unavailable(op string, err error) error {
	return fmt.Errorf("redis registry %s: %w: %w", op, ErrUnavailable, err)
}

// recordKey returns the key of the record of the peer at addr.
func (r *Redis) recordKey(a [16]byte) string {
	b := make([]byte, 0, len(r.prefix)+2+28+3)
	b = append(b, r.prefix...)
	b = append(b, ":{"...)
	b = hex.AppendEncode(b, a[2:])
	b = append(b, "}:p"...)
	return string(b)
}

// countKey returns the HyperLogLog key of count shard s in window w.
func (r *Redis) countKey(s byte, w int64) string {
	return r.prefix + ":{cnt" + strconv.FormatUint(uint64(s), 16) + "}:c:" + strconv.FormatInt(w, 10)
}

// indexKey returns the expiry index key of count shard s.
func (r *Redis) indexKey(s byte) string {
	return r.prefix + ":{cnt" + strconv.FormatUint(uint64(s), 16) + "}:x"
}

// Evicted counts the records deleted to keep the cap.
func (r *Redis) Evicted() uint64 { return r.evicted.Load() }

func (r *Redis) bucket() int64 { return r.now().UnixNano() / int64(r.window) }

// Put stores or refreshes rec until ttl from now. It joins the next batch
// of Puts (redisbatch.go): one pipelined round trip writes the batch's
// records (SET with expiry; for a record with a Sent, the putIfNewerLua
// script, which compares and writes in one atomic step and may refuse with
// ErrNotNewer) and counts them (PFADD and PEXPIRE of each count bucket the
// batch touches; a refused Put is counted too, and with MaxRecords files
// its peer anew in the expiry index). It returns when its batch is written
// or ctx ends, whichever is first.
func (r *Redis) Put(ctx context.Context, rec Record, ttl time.Duration) error {
	if err := checkPut(rec, ttl); err != nil {
		return err
	}
	body, err := appendRecord(make([]byte, 0, 256), rec)
	if err != nil {
		return err
	}
	a := rec.ID.OverlayAddr().As16()
	op := &putOp{
		ctx:   ctx,
		key:   r.recordKey(a),
		body:  body,
		ttl:   max(ttl, time.Millisecond), // Redis counts expiry in milliseconds
		addr:  string(a[2:]),
		shard: a[2] % countShards,
		sent:  sentMillis(rec.Sent),
		done:  make(chan error, 1),
	}
	if !r.enqueue(op) {
		return unavailable("put", errPutQueueFull)
	}
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		return unavailable("put", ctx.Err())
	}
}

// poppedKeys returns the record keys of the index entries ZPOPMIN popped.
func (r *Redis) poppedKeys(popped []redis.Z) []string {
	keys := make([]string, 0, len(popped))
	for _, z := range popped {
		m, ok := z.Member.(string)
		if !ok || len(m) != 14 {
			continue
		}
		var a [16]byte
		copy(a[2:], m)
		keys = append(keys, r.recordKey(a))
	}
	return keys
}

// evict deletes the records whose index entries the cap script popped.
func (r *Redis) evict(ctx context.Context, keys []string) error {
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Del(ctx, k) // one key per command: each lives in its own slot
		}
		return nil
	})
	if err != nil {
		return unavailable("evict", err)
	}
	r.evicted.Add(uint64(len(keys)))
	return nil
}

// Get returns the live record of id.
func (r *Redis) Get(ctx context.Context, id crypto.PeerID) (Record, error) {
	rec, err := r.get(ctx, id.OverlayAddr())
	if err == nil && rec.ID != id {
		return Record{}, ErrNotFound
	}
	return rec, err
}

// GetByAddr returns the live record whose overlay address is addr.
func (r *Redis) GetByAddr(ctx context.Context, addr netip.Addr) (Record, error) {
	addr = addr.Unmap()
	if !crypto.IsOverlay(addr) {
		return Record{}, ErrNotFound
	}
	rec, err := r.get(ctx, addr)
	if err == nil && !rec.ID.Owns(addr) {
		return Record{}, fmt.Errorf("redis registry: record under %v belongs to %v: %w", addr, rec.ID.Short(), ErrBadRecord)
	}
	return rec, err
}

func (r *Redis) get(ctx context.Context, addr netip.Addr) (Record, error) {
	b, err := r.c.Get(ctx, r.recordKey(addr.As16())).Bytes()
	if errors.Is(err, redis.Nil) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, unavailable("get", err)
	}
	rec, err := decodeRecord(b)
	if err != nil {
		return Record{}, fmt.Errorf("redis registry: %w", err)
	}
	return rec, nil
}

// Delete removes the record of id. Len keeps counting it until its count
// window passes.
func (r *Redis) Delete(ctx context.Context, id crypto.PeerID) error {
	a := id.OverlayAddr().As16()
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.recordKey(a))
		if r.perShard > 0 {
			p.ZRem(ctx, r.indexKey(a[2]%countShards), a[2:])
		}
		return nil
	})
	if err != nil {
		return unavailable("delete", err)
	}
	return nil
}

// Len estimates the peers that registered within the last one to two count
// windows (HyperLogLog: about 1% error), with one pipelined round trip.
func (r *Redis) Len(ctx context.Context) (int, error) {
	w := r.bucket()
	cmds := make([]*redis.IntCmd, countShards)
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := range cmds {
			cmds[s] = p.PFCount(ctx, r.countKey(byte(s), w), r.countKey(byte(s), w-1))
		}
		return nil
	})
	if err != nil {
		return 0, unavailable("len", err)
	}
	n := 0
	for _, c := range cmds {
		n += int(c.Val())
	}
	return n, nil
}

// Ping checks that Redis answers; on a Cluster, that every master does.
func (r *Redis) Ping(ctx context.Context) error {
	var err error
	if cc, ok := r.c.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		})
	} else {
		err = r.c.Ping(ctx).Err()
	}
	if err != nil {
		return unavailable("ping", err)
	}
	return nil
}

// Close closes the client.
func (r *Redis) Close() error { return r.c.Close() }

// putIfNewerLua is the conditional put of a record with a send time:
// KEYS[1] is the record key, ARGV the record, its TTL in milliseconds and
// its sent field (Unix ms, positive). It stores the record unless the live
// one has a sent field not earlier (answer 0); a stored record without one
// (written before 1.2, or by a Put without a send time) is replaced
// (answer 1). sent walks the stored form of codec.go as recordSent does.
const putIfNewerLua = `
local function sent(b)
  local n = #b
  if n < 43 or string.byte(b, 1) ~= 1 then return 0 end
  local i = 44
  local function uvarint()
    local v, m = 0, 1
    while i <= n do
      local c = string.byte(b, i)
      i = i + 1
      v = v + (c % 128) * m
      if c < 128 then return v end
      m = m * 128
      if m > 2^63 then return nil end
    end
    return nil
  end
  local function addrport()
    local k = string.byte(b, i)
    if k == 0 then i = i + 1
    elseif k == 4 then i = i + 7
    elseif k == 6 then i = i + 19
    else return false end
    return i <= n + 1
  end
  if not addrport() then return 0 end
  local c = uvarint()
  if not c or c > n - i + 1 then return 0 end
  for _ = 1, c do
    if not addrport() then return 0 end
  end
  c = uvarint()
  if not c or c > n - i + 1 then return 0 end
  for _ = 1, c do
    local l = uvarint()
    if not l then return 0 end
    i = i + l
    if i > n + 1 then return 0 end
  end
  c = uvarint()
  if not c or 32 * c > n - i + 1 then return 0 end
  i = i + 32 * c
  local l = uvarint()
  if not l then return 0 end
  i = i + l
  if i > n then return 0 end
  if not addrport() then return 0 end
  if i + 7 > n or string.byte(b, i + 7) >= 128 then return 0 end
  local v = 0
  for j = i + 7, i, -1 do v = v * 256 + string.byte(b, j) end
  return v
end
local old = redis.call('GET', KEYS[1])
if old and sent(old) >= tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`
