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
	defer conn.SetReadDeadline(time.Time{})
	first, err := turnRoundTrip(conn, server, allocateRequest(), deadline)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var realm stun.Realm
	var nonce stun.Nonce
	if err := realm.GetFrom(first); err != nil {
		return netip.AddrPort{}, fmt.Errorf("turn: 401 without realm: %w", err)
	}
	if err := nonce.GetFrom(first); err != nil {
		return netip.AddrPort{}, fmt.Errorf("turn: 401 without nonce: %w", err)
	}
	auth := []stun.Setter{stun.NewUsername(user), realm, nonce, stun.NewLongTermIntegrity(user, realm.String(), pass), stun.Fingerprint}
	req := stun.MustBuild(append([]stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}}, auth...)...)
	resp, err := turnRoundTrip(conn, server, req.Raw, deadline)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if resp.Type.Class != stun.ClassSuccessResponse {
		var code stun.ErrorCodeAttribute
		_ = code.GetFrom(resp)
		return netip.AddrPort{}, fmt.Errorf("turn: allocate refused: %d %s", code.Code, code.Reason)
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(resp, stun.AttrXORRelayedAddress); err != nil {
		return netip.AddrPort{}, fmt.Errorf("turn: no relayed address: %w", err)
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	ra := netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port))
	if release {
		refresh := stun.MustBuild(append([]stun.Setter{stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest),
			stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}}, auth...)...)
		if _, err := turnRoundTrip(conn, server, refresh.Raw, deadline); err != nil {
			return ra, fmt.Errorf("turn: release: %w", err)
		}
	}
	return ra, nil
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
