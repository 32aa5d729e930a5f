package daemon

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/keymesh/keymesh/internal/testutil/ci"
)

func TestParseTCPLine(t *testing.T) {
	// Lines of /proc/net/tcp and tcp6 on a little-endian host.
	v4 := "   1: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 20 4 30 10 -1"
	v6 := "   0: 00000000000000000000000001000000:0050 00000000000000000000000001000000:C000 01 00000000:00000000 00:00000000 00000000    33        0 999 1 0000000000000000 20 4 1 10 -1"
	mapped := "   2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 20 4 1 10 -1"
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		ci.Skip(t, "the sample lines are those of a little-endian host")
	}
	for _, tc := range []struct {
		line          string
		uid           int
		local, remote string
	}{
		{v4, 1000, "127.0.0.1:41394", "127.0.0.1:8080"},
		{v6, 33, "[::1]:80", "[::1]:49152"},
		{mapped, 0, "127.0.0.1:8080", "127.0.0.1:41394"},
	} {
		uid, l, r, ok := parseTCPLine(tc.line)
		if !ok || uid != tc.uid || l != netip.MustParseAddrPort(tc.local) || r != netip.MustParseAddrPort(tc.remote) {
			t.Errorf("parseTCPLine(%q) = %d %s %s %v, want %d %s %s", tc.line, uid, l, r, ok, tc.uid, tc.local, tc.remote)
		}
	}
	closed := "  10: 0100007F:9D6E 0100007F:DB95 05 00000000:00000000 03:0000175E 00000000     0        0 0 3 00000000bb7d2dde"
	if !ownedByProcess(v4) || ownedByProcess(closed) || ownedByProcess("1: 0100007F:9D6E") {
		t.Error("ownedByProcess: want true for a held socket, false for a closed one (inode 0) and a short line")
	}
	if _, _, _, ok := parseTCPLine("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"); ok {
		t.Error("the header parsed as a line")
	}
}

func FuzzParseTCPLine(f *testing.F) {
	f.Add("   1: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 12345 1")
	f.Add("   0: 00000000000000000000000001000000:0050 00000000000000000000000001000000:C000 01 0 0 0 33 0")
	f.Add("x: 01:02 03:zz 1 2 3 4 5")
	f.Fuzz(func(t *testing.T, line string) {
		uid, l, r, ok := parseTCPLine(line)
		if ok && (!l.IsValid() || !r.IsValid() || uid < 0) {
			t.Fatalf("%q: ok with invalid addresses %s %s", line, l, r)
		}
	})
}
