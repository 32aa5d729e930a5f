package overlay

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/keymesh/keymesh/internal/crypto"
)

// CreateTUN opens the TUN device name (made when missing; needs
// CAP_NET_ADMIN) with the MTU MinMTU and the kernel's offloads (TSO and,
// from Linux 6.2, USO, which the tun package splits and coalesces), gives
// it addr with the overlay prefix's length, which routes the whole prefix
// to it, and brings it up. It configures the device with iproute2's `ip`.
func CreateTUN(ctx context.Context, name string, addr netip.Addr) (tun.Device, error) {
	dev, err := tun.CreateTUN(name, MinMTU)
	if err != nil {
		return nil, fmt.Errorf("overlay: TUN device %q (needs CAP_NET_ADMIN): %w", name, err)
	}
	if name, err = dev.Name(); err != nil {
		dev.Close()
		return nil, fmt.Errorf("overlay: TUN device: %w", err)
	}
	pfx := netip.PrefixFrom(addr, crypto.OverlayPrefix.Bits())
	for _, args := range [][]string{
		{"-6", "addr", "replace", pfx.String(), "dev", name, "nodad"},
		{"link", "set", "dev", name, "mtu", fmt.Sprint(MinMTU), "up"},
	} {
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			dev.Close()
			return nil, fmt.Errorf("overlay: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return dev, nil
}
