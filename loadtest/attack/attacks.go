package attack

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Check says how an attack's traffic balance is judged.
type Check string

// Checks.
const (
	// CheckNone: the attacker uses its own addresses (it holds resources
	// rather than reflecting), so bytes out against bytes in says nothing.
	CheckNone Check = "none"
	// CheckAmplification: spoofed requests; the servers may send at most
	// as many bytes to the spoofed sources as they received.
	CheckAmplification Check = "amplification"
	// CheckVictim: an attacker with a proven address makes the server
	// send to a victim it picks; bytes at the victim over bytes the
	// attacker sent are reported (VictimAmplification), not judged: no
	// threshold of the issue covers them.
	CheckVictim Check = "victim"
	// CheckVictimAmplification is CheckVictim, judged: the victims never
	// asked for anything, so they may get no more bytes than the attacker
	// sent (Thresholds.MaxAmplification).
	CheckVictimAmplification Check = "victim-amplification"
	// CheckInternal: the attacker asks a relay to send to loopback, a
	// private address, the metadata address and the server's own
	// address; any datagram arriving there fails.
	CheckInternal Check = "internal"
	// CheckReplay: the attacker resends a legitimate peer's signed
	// request from its own address; any answer fails.
	CheckReplay Check = "replay"
	// CheckReflectRate: STUN Binding from one spoofed victim; the answer
	// may be larger than the request, but the answers to one source must
	// be rate-limited (Thresholds.MaxReflectPPS).
	CheckReflectRate Check = "reflect-rate"
	// CheckChallengeRate: a TURN request that needs a 401/438 challenge
	// from a spoofed victim. A valid challenge (REALM and NONCE) cannot be
	// smaller than 64 bytes while clients' first Allocates are 20-60, so
	// like STUN Binding answers the challenges may be larger than their
	// request but must be rate-limited per source: judged on the answers
	// per second to the victim and on bytes out never exceeding bytes in.
	CheckChallengeRate Check = "challenge-rate"
	// CheckSpoofedPeer: a flood forged from legitimate peers' own
	// addresses; the spoofed peers' Keepalives and Connects
	// (Result.Victims) and the relay pair's datagrams (OpRelay, whose
	// sender is spoofed too) must succeed like the other legitimate
	// operations (Thresholds.MinSuccess; the spoofed peers' also
	// Thresholds.MaxP99).
	CheckSpoofedPeer Check = "spoofed-peer"
	// CheckTURNAuth is CheckAmplification for a flood that reaches TURN
	// authentication; the legitimate TURN allocations (OpTURN) are judged
	// too (Thresholds.MinSuccess).
	CheckTURNAuth Check = "turn-auth"
)

// Attack is one attack of the suite.
type Attack struct {
	Name, Summary string
	Check         Check
	// Spoofed is whether the attack forges its source addresses.
	Spoofed bool
	// Open, when set, says which finding of the attack has no defence
	// yet: `loadtest attack` runs it, the CI short form (TestDefencesHold)
	// leaves it out unless ATTACK_ONLY names it.
	Open string
	run  func(ctx context.Context, e *env) error
}

// env is what an attack runs against and with.
type env struct {
	lab     *Lab
	bins    Binaries
	work    string // this attack's directory
	srv     *servers
	pop     *population
	rate    Rate
	workers int
	maxHeld int
	// legitRate is the legitimate operations' rate (each, per second).
	legitRate float64
	raw       *rawSender
	sent      floodStats
	held      atomic.Int64 // resources the attacker holds (records, allocations, tunnels), or Connects answered
	// victimBytes is what the victim of a CheckVictim attack received.
	victimBytes atomic.Int64
	// victimOps are the spoofed peers' operations of a CheckSpoofedPeer
	// attack (written by the attack before it returns).
	victimOps map[Op]OpResult
	// sinks are the internal destinations of a CheckInternal attack.
	sinks []*sink

	mu      sync.Mutex
	release []func() // run after the measurement
}

func (e *env) onRelease(f func()) {
	e.mu.Lock()
	e.release = append(e.release, f)
	e.mu.Unlock()
}

// Attacks returns the suite in the order it runs. "none" is the baseline:
// the legitimate population alone.
func Attacks() []Attack {
	return []Attack{
		{Name: "none", Summary: "no attack: the legitimate population alone (baseline)", Check: CheckNone,
			run: func(ctx context.Context, _ *env) error { <-ctx.Done(); return nil }},
		{Name: "replay-fill", Summary: "cookieless sealed Registers from one key, fresh nonces, spoofed sources: fills the rendezvous replay cache", Check: CheckAmplification, Spoofed: true, run: replayFill},
		{Name: "x25519", Summary: "Registers from random valid keys (a box that cannot open), spoofed sources: one X25519 each", Check: CheckAmplification, Spoofed: true, run: x25519Flood},
		{Name: "bind-forge", Summary: "RelayBinds with forged signatures from spoofed addresses: spends the global bind budget", Check: CheckAmplification, Spoofed: true, run: bindForge(false)},
		{Name: "bind-forge-ports", Summary: "forged RelayBinds from one spoofed address, rotating ports: per-port limiter", Check: CheckAmplification, Spoofed: true, run: bindForge(true)},
		{Name: "stun-reflect", Summary: "STUN Binding (20 bytes) to the rendezvous from a spoofed victim", Check: CheckReflectRate, Spoofed: true,
			run: stunFlood(func(s *servers) netip.AddrPort { return s.rzAddr })},
		{Name: "stun-reflect-alt", Summary: "STUN Binding to the rendezvous' RFC 5780 alternate socket from a spoofed victim", Check: CheckReflectRate, Spoofed: true,
			run: stunFlood(func(*servers) netip.AddrPort { return netip.AddrPortFrom(srvAltAddr, altPort) })},
		{Name: "turn-stun-reflect", Summary: "STUN Binding to the TURN port from a spoofed victim", Check: CheckReflectRate, Spoofed: true,
			run: stunFlood(func(s *servers) netip.AddrPort { return s.turnAddr })},
		{Name: "turn-allocate-unauth", Summary: "unauthenticated TURN Allocate from a spoofed victim (the 401 answer)", Check: CheckChallengeRate, Spoofed: true, run: turnUnauth},
		{Name: "victim-spoof", Summary: "cookieless Keepalives and Registers, STUN and junk to the rendezvous, forged RelayBinds and junk to the relay, all from registered peers' own addresses: must not silence them", Check: CheckSpoofedPeer, Spoofed: true, run: victimSpoof},
		{Name: "turn-mi-flood", Summary: "TURN Allocates with MESSAGE-INTEGRITY, a valid nonce and random unexpired user names, spoofed sources: each would reach our AuthHandler and pion's integrity check unless the relay's guard drops it first", Check: CheckTURNAuth, Spoofed: true, run: turnMIFlood},
		{Name: "registry-fill", Summary: "fresh keys register from 254 addresses as fast as allowed: registry records", Check: CheckNone, run: registryFill},
		{Name: "turn-exhaust", Summary: "fresh keys register for TURN credentials and hold every allocation they can", Check: CheckNone, run: turnExhaust},
		{Name: "punch-flood", Summary: "registered keys with 16 candidates and 4 tickets each Connect to one legitimate peer: every Connect sends it a large Punch", Check: CheckVictim, run: punchFlood},
		{Name: "peer-reflect", Summary: "registered keys claiming 16 victim candidates Connect to a real `peer up --allow-any`: it probes every victim", Check: CheckVictimAmplification, run: peerReflect},
		{Name: "bind-replay", Summary: "a legitimate peer's RelayBind, captured and resent from other addresses within its 60 s: tickets for the peer's key at the attacker's address", Check: CheckReplay, run: bindReplay},
		{Name: "turn-internal", Summary: "a registered key's TURN allocation sends to 127.0.0.1, 10.9.9.9, 169.254.169.254 and the relay's own address", Check: CheckInternal, run: turnInternal},
		{Name: "stream-internal", Summary: "a self-made key's stream tunnel sends to 127.0.0.1, 10.9.9.9, 169.254.169.254 and the relay's own address", Check: CheckInternal, run: streamInternal},
		{Name: "stream-exhaust", Summary: "fresh keys open and hold TLS stream-relay tunnels (each a UDP socket on the relay)", Check: CheckNone, run: streamExhaust},
	}
}
