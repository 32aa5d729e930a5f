package wire

import "github.com/keymesh/keymesh/internal/crypto"

// KeepalivePad is the zero padding of a Keepalive: it makes the request at
// least as large as any KeepaliveAck (whose instance name is cut to
// MaxAckInstance), so the answer never amplifies.
const (
	KeepalivePad   = 40
	MaxAckInstance = 32
)

// Keepalive is a peer's cheap liveness check of the rendezvous between
// registrations: the server answers a KeepaliveAck naming itself and its
// registry epoch, and touches no registry. A peer whose answers stop, or
// come from another instance or epoch, registers again at once.
type Keepalive struct {
	Cookie crypto.Cookie
}

// Type implements Body.
func (*Keepalive) Type() MsgType { return MsgKeepalive }

func (m *Keepalive) appendTo(w *writer) {
	w.raw(m.Cookie[:])
	var pad [KeepalivePad]byte
	w.raw(pad[:])
}

func (m *Keepalive) readFrom(r *reader) {
	copy(m.Cookie[:], r.need(crypto.CookieSize))
	for _, b := range r.need(KeepalivePad) {
		if b != 0 {
			r.err = ErrMalformed
		}
	}
}

// KeepaliveAck answers a Keepalive: the answering instance's name (cut to
// MaxAckInstance bytes) and the registry epoch.
type KeepaliveAck struct {
	Instance string
	// Epoch is the registry's boot epoch (optional trailer).
	Epoch uint64
}

// Type implements Body.
func (*KeepaliveAck) Type() MsgType { return MsgKeepaliveAck }

// AckInstance is the form of an instance name a KeepaliveAck carries.
func AckInstance(s string) string {
	if len(s) > MaxAckInstance {
		return s[:MaxAckInstance]
	}
	return s
}

func (m *KeepaliveAck) appendTo(w *writer) {
	w.str(AckInstance(m.Instance))
	w.epoch(m.Epoch)
}

func (m *KeepaliveAck) readFrom(r *reader) {
	m.Instance = r.str()
	if len(m.Instance) > MaxAckInstance {
		r.err = ErrMalformed
	}
	m.Epoch = r.epoch()
}
