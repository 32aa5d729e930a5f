package overlay

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/keymesh/keymesh/internal/crypto"
)

// CreateTUN opens the TUN device name (made when missing; needs
// CAP_NET_ADMIN) with the MTU MinMTU and the kernel's offloads (TSO and,
// from Linux 6.2, USO, which the tun package splits and coalesces), gives
// it addr with the overlay prefix's length, which routes the whole prefix
// to it, and brings it up, turning IPv6 on for the device where the host
// has it off by default. It configures the device with iproute2's `ip`.
func CreateTUN(ctx context.Context, name string, addr netip.Addr) (tun.Device, error) {
	dev, err := tun.CreateTUN(name, MinMTU)
	if err != nil {
		return nil, fmt.Errorf("overlay: TUN device %q (needs CAP_NET_ADMIN): %w", name, err)
	}
	if name, err = dev.Name(); err != nil {
		dev.Close()
		return nil, fmt.Errorf("overlay: TUN device: %w", err)
	}
	// A host whose IPv6 is off by default (net.ipv6.conf.default) would
	// make the device without it: the overlay needs it on this device.
	sysctl := "/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6"
	if b, err := os.ReadFile(sysctl); err == nil && strings.TrimSpace(string(b)) == "1" {
		if err := os.WriteFile(sysctl, []byte("0"), 0o644); err != nil {
			dev.Close()
			return nil, fmt.Errorf("overlay: enable IPv6 on %s: %w", name, err)
		}
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
