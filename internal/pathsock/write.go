package pathsock

import (
	"github.com/keymesh/keymesh/internal/udpoffload"
	"net/netip"
)

// Send batching: with segmentation offload, QUIC packets go to a writer
// goroutine that sends each run of same-size frames to one address with a
// single system call.
const (
	outQueue = 512
)

// outPacket is a frame waiting for the writer.
type outPacket struct {
	bp *[]byte
	n  int
	to netip.AddrPort
}

// output sends a frame built in bp (which it takes): through the writer
// when segmentation offload works, else at once.
func (s *Sock) output(bp *[]byte, n int, to netip.AddrPort) bool {
	if !s.gso.Load() {
		ok := s.send((*bp)[:n], to)
		s.putBuf(bp)
		return ok
	}
	select {
	case s.out <- outPacket{bp: bp, n: n, to: to}:
		return true
	case <-s.closed:
		s.putBuf(bp)
		return false
	}
}

func (s *Sock) writeLoop() {
	defer s.wg.Done()
	batch := make([]outPacket, 0, udpoffload.MaxSegs)
	big := make([]byte, 0, 1<<16)
	oob := make([]byte, 0, 64)
	for {
		var p outPacket
		select {
		case p = <-s.out:
		case <-s.closed:
			for {
				select {
				case p = <-s.out:
					s.putBuf(p.bp)
				default:
					return
				}
			}
		}
		batch = append(batch[:0], p)
	fill:
		for len(batch) < udpoffload.MaxSegs {
			select {
			case p = <-s.out:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		s.flush(batch, big, oob)
	}
}

// flush sends a batch: runs of frames to one address, all of one size but
// the last (which may be shorter), as one segmented send each.
func (s *Sock) flush(batch []outPacket, big, oob []byte) {
	for i := 0; i < len(batch); {
		size := batch[i].n
		total := size
		j := i + 1
		for j < len(batch) && j-i < udpoffload.MaxSegs && batch[j].to == batch[i].to &&
			batch[j].n <= size && total+batch[j].n <= udpoffload.MaxGSOBytes {
			total += batch[j].n
			j++
			if batch[j-1].n < size {
				break // a shorter frame ends the run
			}
		}
		if u := s.conn.Load().udp; j-i > 1 && s.gso.Load() && u != nil {
			big = big[:0]
			for _, p := range batch[i:j] {
				big = append(big, (*p.bp)[:p.n]...)
			}
			_, _, err := u.WriteMsgUDPAddrPort(big, udpoffload.AppendGSO(oob[:0], size), batch[i].to)
			if err == nil {
				s.release(batch[i:j])
				i = j
				continue
			}
			if udpoffload.IsGSOError(err) {
				s.log.Info("segmentation offload unavailable; sending datagrams one by one", "err", err)
				s.gso.Store(false)
			} else if !s.isClosed() {
				s.stats.Dropped.Add(uint64(j - i))
				s.heal(err)
				s.release(batch[i:j])
				i = j
				continue
			}
		}
		for _, p := range batch[i:j] {
			s.send((*p.bp)[:p.n], p.to)
		}
		s.release(batch[i:j])
		i = j
	}
}

func (s *Sock) release(ps []outPacket) {
	for _, p := range ps {
		s.putBuf(p.bp)
	}
}
