package pathsock

import (
	"errors"
	"github.com/keymesh/keymesh/internal/udpoffload"
	"net"
	"net/netip"
	"time"
)

// readLoop reads the socket and demultiplexes every datagram; with receive
// offload a read may hold a run of same-size datagrams, split here.
func (s *Sock) readLoop() {
	defer s.wg.Done()
	big := make([]byte, 1<<16)
	oob := make([]byte, 128)
	for {
		conn := s.conn.Load()
		var (
			n, oobn int
			from    netip.AddrPort
			err     error
			bp      *[]byte
		)
		gro := s.gro.Load() && conn.udp != nil
		if gro {
			n, oobn, _, from, err = conn.udp.ReadMsgUDPAddrPort(big, oob)
		} else {
			bp = s.getBuf()
			n, from, err = conn.ReadFromUDPAddrPort(*bp)
		}
		if err != nil {
			if bp != nil {
				s.putBuf(bp)
			}
			if s.isClosed() {
				return
			}
			if conn != s.conn.Load() {
				continue // the socket was replaced
			}
			if errors.Is(err, net.ErrClosed) {
				// Being replaced right now: wait for the new one.
				time.Sleep(10 * time.Millisecond)
				continue
			}
			s.log.Debug("read", "err", err)
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if !gro {
			s.handle(bp, n, from)
			continue
		}
		// A coalesced read holds same-size datagrams back to back.
		seg := udpoffload.GROSize(oob[:oobn])
		if seg <= 0 || seg > readBufSize {
			seg = n
		}
		for off := 0; off < n; off += seg {
			end := min(off+seg, n)
			if end-off > readBufSize {
				break
			}
			bp := s.getBuf()
			k := copy(*bp, big[off:end])
			s.handle(bp, k, from)
		}
	}
}
