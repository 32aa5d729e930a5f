package attack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v4"
)

// allocateRequest is an unauthenticated TURN Allocate for a UDP relay: the
// first message of every TURN client (RFC 8656 section 7.2).
func allocateRequest() []byte {
	m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}})
	return m.Raw
}

// bindingRequest is a bare STUN Binding request (20 bytes: the smallest).
func bindingRequest() []byte {
	return stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
}

// turnAllocate makes one authenticated UDP allocation over conn (the 401
// round trip, then the Allocate with long-term credentials) and, when
// release is true, deletes it again (Refresh with LIFETIME 0). It returns
// the relayed address.
func turnAllocate(conn *net.UDPConn, server netip.AddrPort, user, pass string, release bool, deadline time.Time) (netip.AddrPort, error) {
	ts, err := newTURNSession(conn, server, user, pass, deadline)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if release {
		if err := ts.request(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}); err != nil {
			return ts.relayed, fmt.Errorf("turn: release: %w", err)
		}
	}
	return ts.relayed, nil
}

// turnSession is an allocation made with long-term credentials.
type turnSession struct {
	conn     *net.UDPConn
	server   netip.AddrPort
	auth     []stun.Setter // USERNAME, REALM, NONCE, MESSAGE-INTEGRITY, FINGERPRINT
	relayed  netip.AddrPort
	deadline time.Time
}

// newTURNSession allocates a UDP relay over conn.
func newTURNSession(conn *net.UDPConn, server netip.AddrPort, user, pass string, deadline time.Time) (*turnSession, error) {
	defer conn.SetReadDeadline(time.Time{})
	first, err := turnRoundTrip(conn, server, allocateRequest(), deadline)
	if err != nil {
		return nil, err
	}
	var realm stun.Realm
	var nonce stun.Nonce
	if err := realm.GetFrom(first); err != nil {
		return nil, fmt.Errorf("turn: 401 without realm: %w", err)
	}
	if err := nonce.GetFrom(first); err != nil {
		return nil, fmt.Errorf("turn: 401 without nonce: %w", err)
	}
	auth := []stun.Setter{stun.NewUsername(user), realm, nonce, stun.NewLongTermIntegrity(user, realm.String(), pass), stun.Fingerprint}
	req := stun.MustBuild(append([]stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}}, auth...)...)
	resp, err := turnRoundTrip(conn, server, req.Raw, deadline)
	if err != nil {
		return nil, err
	}
	if err := refused(resp, "allocate"); err != nil {
		return nil, err
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(resp, stun.AttrXORRelayedAddress); err != nil {
		return nil, fmt.Errorf("turn: no relayed address: %w", err)
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	return &turnSession{conn: conn, server: server, auth: auth, deadline: deadline,
		relayed: netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port))}, nil
}

func refused(resp *stun.Message, what string) error {
	if resp.Type.Class == stun.ClassSuccessResponse {
		return nil
	}
	var code stun.ErrorCodeAttribute
	_ = code.GetFrom(resp)
	return fmt.Errorf("turn: %s refused: %d %s", what, code.Code, code.Reason)
}

// request sends an authenticated request of method with attrs and checks
// that it succeeded.
func (ts *turnSession) request(method stun.Method, attrs ...stun.Setter) error {
	defer ts.conn.SetReadDeadline(time.Time{})
	setters := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
	m := stun.MustBuild(append(setters, ts.auth...)...)
	resp, err := turnRoundTrip(ts.conn, ts.server, m.Raw, ts.deadline)
	if err != nil {
		return err
	}
	return refused(resp, method.String())
}

// sendTo asks the relay to send payload to peer: a CreatePermission (which
// a defended relay refuses for a forbidden peer), then a Send indication
// (sent even when the permission was refused: a relay must drop it).
func (ts *turnSession) sendTo(peer netip.AddrPort, payload []byte) error {
	pa := stun.XORMappedAddress{IP: peer.Addr().AsSlice(), Port: int(peer.Port())}
	perr := ts.request(stun.MethodCreatePermission, peerAddr(pa))
	ind := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		peerAddr(pa), stun.RawAttribute{Type: stun.AttrData, Value: payload}, stun.Fingerprint)
	if _, err := ts.conn.WriteToUDPAddrPort(ind.Raw, ts.server); err != nil {
		return err
	}
	return perr
}

// peerAddr is an XOR-PEER-ADDRESS setter.
type peerAddr stun.XORMappedAddress

func (p peerAddr) AddTo(m *stun.Message) error {
	a := stun.XORMappedAddress(p)
	return a.AddToAs(m, stun.AttrXORPeerAddress)
}

// turnRoundTrip sends req and returns the answer with its transaction ID
// (asking again every 500 ms until deadline).
func turnRoundTrip(conn *net.UDPConn, server netip.AddrPort, req []byte, deadline time.Time) (*stun.Message, error) {
	var tx [stun.TransactionIDSize]byte
	copy(tx[:], req[8:20])
	buf := make([]byte, 1500)
	for {
		if _, err := conn.WriteToUDPAddrPort(req, server); err != nil {
			return nil, err
		}
		retry := time.Now().Add(500 * time.Millisecond)
		if retry.After(deadline) {
			retry = deadline
		}
		for time.Now().Before(retry) {
			_ = conn.SetReadDeadline(retry)
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if err != nil {
				return nil, err
			}
			if from != server {
				continue
			}
			m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if m.Decode() != nil || m.TransactionID != tx {
				continue
			}
			return m, nil
		}
		if !time.Now().Before(deadline) {
			return nil, errors.New("turn: no answer")
		}
	}
}
