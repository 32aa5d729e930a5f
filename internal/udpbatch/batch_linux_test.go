package udpbatch

import (
	"net"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestAddrPortRoundTrip: what PutAddrPort writes, AddrPort reads back, for
// IPv4 on an AF_INET socket and IPv4 and IPv6 on an AF_INET6 one; an
// AF_INET socket cannot reach IPv6.
func TestAddrPortRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		dst  string
		v6   bool
		want string
		len  uint32
	}{
		{"203.0.113.7:3478", false, "203.0.113.7:3478", unix.SizeofSockaddrInet4},
		{"[::ffff:203.0.113.7]:443", false, "203.0.113.7:443", unix.SizeofSockaddrInet4},
		{"203.0.113.7:1", true, "203.0.113.7:1", unix.SizeofSockaddrInet6},
		{"[2001:db8::1]:65535", true, "[2001:db8::1]:65535", unix.SizeofSockaddrInet6},
		{"[2001:db8::1]:80", false, "", 0},
	} {
		var sa unix.RawSockaddrInet6
		n := PutAddrPort(&sa, netip.MustParseAddrPort(tc.dst), tc.v6)
		if n != tc.len {
			t.Errorf("%s v6=%v: length %d, want %d", tc.dst, tc.v6, n, tc.len)
			continue
		}
		if n == 0 {
			continue
		}
		if got := AddrPort(&sa).String(); got != tc.want {
			t.Errorf("%s v6=%v: read back %s, want %s", tc.dst, tc.v6, got, tc.want)
		}
	}
	var other unix.RawSockaddrInet6
	other.Family = unix.AF_UNIX
	if a := AddrPort(&other); a.IsValid() {
		t.Errorf("another family decoded as %s", a)
	}
}

// TestSendRecv: a batch sent with Send arrives whole through Recv, with
// its source, raw and not; an empty socket reports that the poller must
// wait.
func TestSendRecv(t *testing.T) {
	for _, raw := range []bool{false, true} {
		a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		b, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		dst := b.LocalAddr().(*net.UDPAddr).AddrPort()

		const n = 4
		var names [n]unix.RawSockaddrInet6
		var iov [n]unix.Iovec
		hdrs := make([]unix.Mmsghdr, n)
		payload := [n][]byte{[]byte("zero"), []byte("one"), []byte("two"), []byte("three")}
		for i := range n {
			hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&names[i]))
			hdrs[i].Hdr.Namelen = PutAddrPort(&names[i], dst, false)
			iov[i].Base = &payload[i][0]
			iov[i].SetLen(len(payload[i]))
			hdrs[i].Hdr.Iov = &iov[i]
			hdrs[i].Hdr.SetIovlen(1)
		}
		rcA, _ := a.SyscallConn()
		var res Result
		if err := rcA.Write(func(fd uintptr) bool { return Send(fd, hdrs, raw, &res) }); err != nil || res.Errno != 0 || res.N != n {
			t.Fatalf("raw=%v: send: %v %v, %d sent", raw, err, res.Errno, res.N)
		}

		var rnames [n + 2]unix.RawSockaddrInet6
		var riov [n + 2]unix.Iovec
		bufs := make([]byte, (n+2)*64)
		rh := make([]unix.Mmsghdr, n+2)
		for i := range rh {
			rh[i].Hdr.Name = (*byte)(unsafe.Pointer(&rnames[i]))
			rh[i].Hdr.Namelen = unix.SizeofSockaddrInet6
			riov[i].Base = &bufs[i*64]
			riov[i].SetLen(64)
			rh[i].Hdr.Iov = &riov[i]
			rh[i].Hdr.SetIovlen(1)
		}
		rcB, _ := b.SyscallConn()
		got := 0
		for got < n {
			if err := rcB.Read(func(fd uintptr) bool { return Recv(fd, rh[got:], raw, &res) }); err != nil || res.Errno != 0 {
				t.Fatalf("raw=%v: recv: %v %v", raw, err, res.Errno)
			}
			got += res.N
		}
		src := a.LocalAddr().(*net.UDPAddr).AddrPort()
		for i := range n {
			if s := AddrPort(&rnames[i]); s != src {
				t.Errorf("raw=%v: datagram %d from %s, want %s", raw, i, s, src)
			}
			if p := string(bufs[i*64 : i*64+int(rh[i].Len)]); p != string(payload[i]) {
				t.Errorf("raw=%v: datagram %d is %q, want %q", raw, i, p, payload[i])
			}
		}
		var waited bool
		_ = rcB.Control(func(fd uintptr) { waited = !Recv(fd, rh, raw, &res) })
		if !waited {
			t.Errorf("raw=%v: an empty socket did not ask the poller to wait", raw)
		}
	}
}
