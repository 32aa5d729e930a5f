package turnrelay

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestConfigDefaultsAndValidate(t *testing.T) {
	lo, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lo.Close()
	any4, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer any4.Close()

	c := Config{PacketConns: []net.PacketConn{lo}, Secret: testSecret}.withDefaults()
	if err := c.validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	if c.Realm != DefaultRealm || c.MaxAllocationsPerUser != DefaultMaxAllocationsPerUser ||
		c.Logger == nil || c.Now == nil || c.RelayIP != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("defaults not applied: %+v", c)
	}

	cases := []struct {
		name string
		cfg  Config
		want error
	}{
		{"no sockets", Config{Secret: testSecret}, ErrNoSockets},
		{"nil socket", Config{PacketConns: []net.PacketConn{nil}, Secret: testSecret, RelayIP: netip.MustParseAddr("127.0.0.1")}, ErrNoSockets},
		{"no secret", Config{PacketConns: []net.PacketConn{lo}}, ErrSecret},
		{"short secret", Config{PacketConns: []net.PacketConn{lo}, Secret: []byte("short")}, ErrSecret},
		{"wildcard without relay ip", Config{PacketConns: []net.PacketConn{any4}, Secret: testSecret}, ErrRelayIP},
		{"unspecified relay ip", Config{PacketConns: []net.PacketConn{lo}, Secret: testSecret, RelayIP: netip.IPv4Unspecified()}, ErrRelayIP},
		{"long realm", Config{PacketConns: []net.PacketConn{lo}, Secret: testSecret, Realm: string(make([]byte, 800))}, ErrRealm},
	}
	for _, tc := range cases {
		if err := tc.cfg.withDefaults().validate(); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}

	c = Config{PacketConns: []net.PacketConn{any4}, Secret: testSecret, RelayIP: netip.MustParseAddr("::ffff:198.51.100.7")}.withDefaults()
	if err := c.validate(); err != nil || c.RelayIP != netip.MustParseAddr("198.51.100.7") {
		t.Fatalf("mapped relay IP: %v, %v", c.RelayIP, err)
	}
}
