package natlab

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

// TestUplinkRoutes: an uplink carries only the prefixes named, never a
// default route (nor one in parts), nothing of the lab's own
// public segment, LANs, backbones or link, and no
// IPv6; it refuses such a configuration before it touches anything.
func TestUplinkRoutes(t *testing.T) {
	for _, tc := range []struct {
		routes []string
		want   string
	}{
		{nil, "no routes"},
		{[]string{"0.0.0.0/0"}, "no default route"},
		{[]string{"0.0.0.0/1", "128.0.0.0/1"}, "overlaps"}, // a default route in halves
		{[]string{"100.64.7.0/24"}, "overlaps"},            // a site's LAN
		{[]string{"100.127.0.0/16"}, "overlaps"},           // the anycast backbones
		{[]string{"203.0.113.128/25"}, "overlaps"},
		{[]string{"198.51.100.7/32"}, "overlaps"},
		{[]string{"100.126.255.0/24"}, "overlaps"},
		{[]string{"2001:db8::/64"}, "IPv4 only"},
	} {
		var cfg UplinkConfig
		for _, r := range tc.routes {
			cfg.Routes = append(cfg.Routes, netip.MustParsePrefix(r))
		}
		_, err := (&Lab{}).AddUplink(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("routes %v: error %v, want one saying %q", tc.routes, err, tc.want)
		}
	}
}
