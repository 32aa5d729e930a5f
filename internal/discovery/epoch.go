package discovery

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Epocher is a registry with a boot epoch: a random non-zero number that
// stays the same while the registry keeps its records and changes when it
// lost them (a Memory started empty, a Redis that came back without its
// data). The rendezvous sends it in its sealed answers, so that a peer that
// sees it change registers again at once instead of at its next refresh.
type Epocher interface {
	Epoch(ctx context.Context) (uint64, error)
}

var (
	_ Epocher = (*Memory)(nil)
	_ Epocher = (*Redis)(nil)
)

// newEpoch draws a random non-zero epoch.
func newEpoch() uint64 {
	for {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		if v := binary.LittleEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

// Epoch returns the memory registry's epoch: drawn by NewMemory, or the one
// of the snapshot LoadSnapshot restored (the records survived, so peers need
// not register again).
func (m *Memory) Epoch(context.Context) (uint64, error) { return m.epoch.Load(), nil }

// epochKey holds the Redis registry's epoch (P:epoch, with P the prefix).
func (r *Redis) epochKey() string { return r.prefix + ":epoch" }

// Epoch returns the epoch stored in Redis, setting a new one first when
// there is none (a fresh Redis, or one restarted without its data: every
// record is gone with it). Instances that race to set it agree on the
// first (SET NX).
func (r *Redis) Epoch(ctx context.Context) (uint64, error) {
	for range 2 {
		s, err := r.c.Get(ctx, r.epochKey()).Result()
		if err == nil {
			v, perr := strconv.ParseUint(s, 10, 64)
			if perr != nil || v == 0 {
				return 0, errors.Join(ErrBadRecord, perr)
			}
			return v, nil
		}
		if !errors.Is(err, redis.Nil) {
			return 0, unavailable("epoch", err)
		}
		if err := r.c.SetNX(ctx, r.epochKey(), strconv.FormatUint(newEpoch(), 10), 0).Err(); err != nil {
			return 0, unavailable("epoch", err)
		}
	}
	return 0, unavailable("epoch", errors.New("the epoch key vanished as it was set"))
}
