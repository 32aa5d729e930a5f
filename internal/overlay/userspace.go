package overlay

import (
	"context"
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun/netstack"
)

// Stack is the userspace mode: gVisor's TCP/IP stack (through wireguard's
// netstack package) holding the peer's overlay address, its packets routed
// to the peers by a Router. Its Net dials and listens on overlay addresses
// without a TUN device or privileges.
type Stack struct {
	*netstack.Net
	Router *Router
}

// NewStack makes the userspace stack for cfg.Transport's overlay address;
// cfg.Device must be nil (the stack is the device). Run starts it.
func NewStack(cfg Config) (*Stack, error) {
	if cfg.Device != nil {
		return nil, fmt.Errorf("overlay: NewStack makes its own device")
	}
	if cfg.Transport == nil {
		return nil, fmt.Errorf("overlay: Config.Transport is required")
	}
	dev, tnet, err := netstack.CreateNetTUN([]netip.Addr{cfg.Transport.OverlayAddr()}, nil, MinMTU)
	if err != nil {
		return nil, fmt.Errorf("overlay: userspace stack: %w", err)
	}
	cfg.Device = dev
	r, err := New(cfg)
	if err != nil {
		dev.Close()
		return nil, err
	}
	return &Stack{Net: tnet, Router: r}, nil
}

// Run carries packets until ctx ends, then closes the stack.
func (s *Stack) Run(ctx context.Context) error { return s.Router.Run(ctx) }
