//go:build !linux

package overlay

import (
	"context"
	"errors"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
)

// CreateTUN is Linux-only here: elsewhere use the userspace mode.
func CreateTUN(ctx context.Context, name string, addr netip.Addr) (tun.Device, error) {
	return nil, errors.New("overlay: TUN mode is implemented for Linux only; use the userspace mode (--userspace)")
}
