package wire

import (
	"encoding/binary"

	"github.com/keymesh/keymesh/internal/crypto"
)

// Outcomes of a traversal, as a Report gives them.
const (
	OutcomeFailed      byte = 0 // no path at all
	OutcomeDirect      byte = 1 // ended on a direct path
	OutcomeRelayUDP    byte = 2 // ended relayed by the UDP ticket relay
	OutcomeRelayStream byte = 3 // ended relayed, one side in a TLS stream tunnel
	maxOutcome              = OutcomeRelayStream
)

// Report tells the rendezvous how one session's traversal went, once it
// settled or failed, so operators see traversal success from the field. It
// names nobody: no peer ID and no address, only the sender's and the
// other side's NAT behaviours (NAT values), the outcome and its times.
// A decoder refuses values outside the fixed sets, so the server's labels
// stay bounded.
//
//	[0:16] cookie  [16] initiator (bool)  [17] local NAT  [18] remote NAT
//	[19] outcome  [20:24] first byte (ms)  [24:28] to direct (ms, 0: never)
//	[28:30] path switches
type Report struct {
	Cookie crypto.Cookie
	// Initiator is set when the sender asked for the session (sent the
	// Connect); the other side's report has it clear.
	Initiator bool
	// LocalNAT is the sender's NAT behaviour, RemoteNAT the other side's
	// as the rendezvous introduced it.
	LocalNAT, RemoteNAT NAT
	// Outcome is an Outcome* constant.
	Outcome byte
	// FirstByteMs is the time from the introduction to the first frame
	// from the other side; DirectMs to the first direct path (0: never).
	FirstByteMs, DirectMs uint32
	// Switches counts changes between direct and relayed paths.
	Switches uint16
}

// Type implements Body.
func (*Report) Type() MsgType { return MsgReport }

func (m *Report) appendTo(w *writer) {
	w.raw(m.Cookie[:])
	w.bool(m.Initiator)
	w.u8(byte(m.LocalNAT))
	w.u8(byte(m.RemoteNAT))
	w.u8(m.Outcome)
	w.u32(m.FirstByteMs)
	w.u32(m.DirectMs)
	w.u16(m.Switches)
}

func (m *Report) readFrom(r *reader) {
	copy(m.Cookie[:], r.need(crypto.CookieSize))
	m.Initiator = r.bool()
	m.LocalNAT = NAT(r.u8())
	m.RemoteNAT = NAT(r.u8())
	m.Outcome = r.u8()
	m.FirstByteMs = r.u32()
	m.DirectMs = r.u32()
	m.Switches = r.u16()
	if r.err == nil && (m.LocalNAT > maxNAT || m.RemoteNAT > maxNAT || m.Outcome > maxOutcome) {
		r.err = ErrMalformed
	}
}

func (w *writer) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }

func (r *reader) u32() uint32 {
	if v := r.need(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}
