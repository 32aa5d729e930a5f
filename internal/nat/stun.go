package nat

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v4"
)

// STUNRetry is how often an unanswered STUN Binding request is resent.
const STUNRetry = 500 * time.Millisecond

// BindingRequest returns a new STUN Binding request and its transaction ID.
func BindingRequest() ([]byte, [stun.TransactionIDSize]byte, error) {
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return nil, [stun.TransactionIDSize]byte{}, fmt.Errorf("build STUN request: %w", err)
	}
	return m.Raw, m.TransactionID, nil
}

// ParseBindingResponse decodes a STUN Binding success response and returns
// its transaction ID and mapped address (XOR-MAPPED-ADDRESS, or the older
// MAPPED-ADDRESS).
func ParseBindingResponse(b []byte) (tx [stun.TransactionIDSize]byte, addr netip.AddrPort, err error) {
	if !stun.IsMessage(b) {
		return tx, addr, ErrNotSTUN
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return tx, addr, fmt.Errorf("%w: %v", ErrNotSTUN, err)
	}
	tx = m.TransactionID
	if m.Type != stun.BindingSuccess {
		return tx, addr, ErrNotResponse
	}
	var ip net.IP
	var port int
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(m); err == nil {
		ip, port = xor.IP, xor.Port
	} else {
		var mapped stun.MappedAddress
		if err := mapped.GetFrom(m); err != nil {
			return tx, addr, ErrNoMappedAddr
		}
		ip, port = mapped.IP, mapped.Port
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port <= 0 || port > 65535 {
		return tx, addr, ErrNoMappedAddr
	}
	return tx, netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}

// STUNClient asks STUN servers for the peer's reflexive address over a
// socket someone else owns: it sends with Send, and the socket's reader
// hands it every STUN message with Handle.
type STUNClient struct {
	send func(b []byte, to netip.AddrPort) error

	mu      sync.Mutex
	waiting map[[stun.TransactionIDSize]byte]chan netip.AddrPort
}

// NewSTUNClient returns a client that sends through send.
func NewSTUNClient(send func(b []byte, to netip.AddrPort) error) (*STUNClient, error) {
	if send == nil {
		return nil, ErrNoSTUNSendFunc
	}
	return &STUNClient{send: send, waiting: map[[stun.TransactionIDSize]byte]chan netip.AddrPort{}}, nil
}

// Handle takes a STUN message from the socket. It reports whether the
// message answered one of the client's requests.
func (c *STUNClient) Handle(b []byte, _ netip.AddrPort) bool {
	tx, addr, err := ParseBindingResponse(b)
	if err != nil {
		return false
	}
	c.mu.Lock()
	ch, ok := c.waiting[tx]
	delete(c.waiting, tx)
	c.mu.Unlock()
	if !ok {
		return false
	}
	ch <- addr // buffered: never blocks
	return true
}

// Query asks server for our reflexive address, resending every STUNRetry
// until an answer comes or ctx ends.
func (c *STUNClient) Query(ctx context.Context, server netip.AddrPort) (netip.AddrPort, error) {
	ch := make(chan netip.AddrPort, 1)
	var txs [][stun.TransactionIDSize]byte
	defer func() {
		c.mu.Lock()
		for _, tx := range txs {
			delete(c.waiting, tx)
		}
		c.mu.Unlock()
	}()
	t := time.NewTicker(STUNRetry)
	defer t.Stop()
	for {
		req, tx, err := BindingRequest()
		if err != nil {
			return netip.AddrPort{}, err
		}
		c.mu.Lock()
		c.waiting[tx] = ch
		c.mu.Unlock()
		txs = append(txs, tx)
		if err := c.send(req, server); err != nil {
			return netip.AddrPort{}, fmt.Errorf("send STUN request to %s: %w", server, err)
		}
		select {
		case a := <-ch:
			return a, nil
		case <-ctx.Done():
			return netip.AddrPort{}, fmt.Errorf("%w from %s: %w", ErrSTUNTimeout, server, ctx.Err())
		case <-t.C:
		}
	}
}
