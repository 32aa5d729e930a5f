package attack

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keymesh/keymesh/internal/natlab"
)

// rawSender sends UDP datagrams with any IPv4 source address from a raw
// socket (IP_HDRINCL) opened in the attacker's namespace. The kernel routes
// them by destination and leaves the source as written.
type rawSender struct {
	fd int
}

func newRawSender(ns string) (*rawSender, error) {
	var fd int
	err := natlab.InNetns(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("attack: raw socket in %s: %w", ns, err)
	}
	return &rawSender{fd: fd}, nil
}

func (r *rawSender) close() { unix.Close(r.fd) }

// udpHeaderLen is the IPv4 and UDP headers a raw datagram carries.
const udpHeaderLen = 28

// packet writes an IPv4/UDP datagram from src to dst carrying payload into
// buf and returns it. The UDP checksum is left 0 (allowed over IPv4).
func packet(buf []byte, src, dst netip.AddrPort, payload []byte) []byte {
	n := udpHeaderLen + len(payload)
	buf = buf[:n]
	buf[0], buf[1] = 0x45, 0
	binary.BigEndian.PutUint16(buf[2:], uint16(n))
	binary.BigEndian.PutUint32(buf[4:], 0)
	buf[8], buf[9] = 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(buf[10:], 0) // the kernel fills the checksum
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(buf[12:16], s[:])
	copy(buf[16:20], d[:])
	binary.BigEndian.PutUint16(buf[20:], src.Port())
	binary.BigEndian.PutUint16(buf[22:], dst.Port())
	binary.BigEndian.PutUint16(buf[24:], uint16(8+len(payload)))
	binary.BigEndian.PutUint16(buf[26:], 0)
	copy(buf[28:], payload)
	return buf
}

func (r *rawSender) send(pkt []byte, dst netip.Addr) error {
	sa := &unix.SockaddrInet4{Addr: dst.As4()}
	for {
		err := unix.Sendto(r.fd, pkt, 0, sa)
		if err == unix.ENOBUFS || err == unix.EAGAIN || err == unix.EINTR {
			time.Sleep(50 * time.Microsecond)
			continue
		}
		return err
	}
}

// randomSource returns a random address and port in the spoofed range.
func randomSource(r *rand.Rand) netip.AddrPort {
	base := spoofNet.Addr().As4()
	v := binary.BigEndian.Uint32(base[:]) | (r.Uint32() & (1<<(32-spoofNet.Bits()) - 1))
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrPortFrom(netip.AddrFrom4(a), uint16(1024+r.IntN(64000)))
}

// victim is the spoofed source a reflection attack aims its answers at.
var victim = netip.AddrPortFrom(netip.MustParseAddr("100.96.0.7"), 4444)

// Rate is an attack rate: bits per second or packets per second.
type Rate struct {
	Bits    float64 // bits/s (of UDP payload); 0 when Packets is set
	Packets float64 // packets/s
}

// pps converts the rate for datagrams of size bytes of payload.
func (r Rate) pps(size int) float64 {
	if r.Packets > 0 {
		return r.Packets
	}
	return r.Bits / 8 / float64(size)
}

// scale is f times the rate.
func (r Rate) scale(f float64) Rate { return Rate{Bits: r.Bits * f, Packets: r.Packets * f} }

func (r Rate) String() string {
	if r.Packets > 0 {
		return fmt.Sprintf("%.0f pkt/s", r.Packets)
	}
	return fmt.Sprintf("%s/s", bitsText(r.Bits))
}

func bitsText(b float64) string {
	switch {
	case b >= 1e9:
		return fmt.Sprintf("%.2f Gbit", b/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%.1f Mbit", b/1e6)
	case b >= 1e3:
		return fmt.Sprintf("%.1f kbit", b/1e3)
	}
	return fmt.Sprintf("%.0f bit", b)
}

// floodStats count what a flood sent.
type floodStats struct {
	packets, bytes atomic.Int64 // bytes of UDP payload
}

// flood sends, from workers goroutines, datagrams made by next (payload and
// source, for the one destination dst) at rate pps until ctx ends. next is
// called with a per-worker random source and scratch buffer.
func flood(ctx context.Context, rs *rawSender, dst netip.AddrPort, pps float64, workers int,
	next func(r *rand.Rand, scratch []byte) (payload []byte, src netip.AddrPort), st *floodStats) {
	var wg sync.WaitGroup
	per := pps / float64(workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			scratch := make([]byte, 2048)
			buf := make([]byte, 2048)
			start := time.Now()
			var sent float64
			for ctx.Err() == nil {
				// Pace in slices of 1 ms: send what is due, then sleep.
				due := per * time.Since(start).Seconds()
				if sent >= due {
					time.Sleep(time.Millisecond)
					continue
				}
				for n := 0; sent < due && n < 256; n++ {
					payload, src := next(r, scratch)
					pkt := packet(buf, src, dst, payload)
					if err := rs.send(pkt, dst.Addr()); err != nil {
						return
					}
					sent++
					st.packets.Add(1)
					st.bytes.Add(int64(len(payload)))
				}
				// Never bank more than 50 ms of backlog: a sender that
				// cannot keep up runs flat out, not in bursts.
				if due-sent > per*0.05 {
					sent = due - per*0.05
				}
			}
		}()
	}
	wg.Wait()
}

// ParseRate reads "100Mbit", "500kbit", "2Gbit", "1e8" (bits/s) or
// "50kpps", "20000pps" (packets/s). "bps" and "bit/s" suffixes are taken
// for bits too.
func ParseRate(s string) (Rate, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	pps := false
	for _, suf := range []string{"pps", "pkt/s"} {
		if v, ok := strings.CutSuffix(t, suf); ok {
			t, pps = v, true
			break
		}
	}
	if !pps {
		for _, suf := range []string{"bit/s", "bps", "bit", "b/s"} {
			if v, ok := strings.CutSuffix(t, suf); ok {
				t = v
				break
			}
		}
	}
	mult := 1.0
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult, t = 1e3, t[:n-1]
		case 'm':
			mult, t = 1e6, t[:n-1]
		case 'g':
			mult, t = 1e9, t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return Rate{}, fmt.Errorf("%q: want bits/s such as 100Mbit or packets/s such as 50kpps", s)
	}
	if pps {
		return Rate{Packets: v * mult}, nil
	}
	return Rate{Bits: v * mult}, nil
}
