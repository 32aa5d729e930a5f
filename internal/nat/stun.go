package nat

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/stunbind"
)

// STUNRetry is how often an unanswered STUN Binding request is resent.
const STUNRetry = 500 * time.Millisecond

// STUNClient asks STUN servers for the peer's reflexive address over a
// socket someone else owns: it sends with Send, and the socket's reader
// hands it every STUN message with Handle.
type STUNClient struct {
	send func(b []byte, to netip.AddrPort) error

	mu      sync.Mutex
	waiting map[stunbind.TxID]chan netip.AddrPort
}

// NewSTUNClient returns a client that sends through send.
func NewSTUNClient(send func(b []byte, to netip.AddrPort) error) (*STUNClient, error) {
	if send == nil {
		return nil, ErrNoSTUNSendFunc
	}
	return &STUNClient{send: send, waiting: map[stunbind.TxID]chan netip.AddrPort{}}, nil
}

// Handle takes a STUN message from the socket. It reports whether the
// message answered one of the client's requests.
func (c *STUNClient) Handle(b []byte, _ netip.AddrPort) bool {
	r, err := stunbind.Parse(b)
	if err != nil {
		return false
	}
	c.mu.Lock()
	ch, ok := c.waiting[r.Tx]
	delete(c.waiting, r.Tx)
	c.mu.Unlock()
	if !ok {
		return false
	}
	ch <- r.Mapped // buffered: never blocks
	return true
}

// Query asks server for our reflexive address, resending every STUNRetry
// until an answer comes or ctx ends.
func (c *STUNClient) Query(ctx context.Context, server netip.AddrPort) (netip.AddrPort, error) {
	ch := make(chan netip.AddrPort, 1)
	var txs []stunbind.TxID
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
		req, tx, err := stunbind.Request(stunbind.RequestOptions{Fingerprint: true})
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
