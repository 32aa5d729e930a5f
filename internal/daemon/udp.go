package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// UDP datagrams cross the daemon's API socket (POST /v1/dial with
// proto=udp, upgraded) as frames: a 2-byte big-endian length, then that
// many bytes of payload.

// MaxFrame is the largest datagram a frame carries.
const MaxFrame = 65535

// ErrFrameTooLarge is WriteFrame's answer to a datagram over MaxFrame.
var ErrFrameTooLarge = errors.New("datagram larger than a frame carries")

// WriteFrame writes b as one frame.
func WriteFrame(w io.Writer, b []byte) error {
	if len(b) > MaxFrame {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(b))
	}
	buf := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(buf, uint16(len(b)))
	copy(buf[2:], b)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one frame into buf (at least MaxFrame bytes) and returns
// the datagram, a slice of buf.
func ReadFrame(r io.Reader, buf []byte) ([]byte, error) {
	if len(buf) < MaxFrame {
		return nil, fmt.Errorf("ReadFrame: buffer of %d bytes, want %d", len(buf), MaxFrame)
	}
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		return nil, fmt.Errorf("frame: %w", io.ErrUnexpectedEOF)
	}
	return buf[:n], nil
}

// ForwardUDP relays the datagrams arriving on pc, one flow per source
// address, each flow a framed connection that open makes (Client.DialUDP),
// and writes each flow's answers back to its source. It keeps at most
// MaxUDPFlows flows (a new source past that replaces the least recently
// used) and ends a flow idle for UDPIdle. It returns when ctx ends or pc
// fails.
func ForwardUDP(ctx context.Context, pc net.PacketConn, open func(context.Context) (net.Conn, error)) error {
	type flow struct {
		c    net.Conn
		last time.Time
	}
	var mu sync.Mutex
	flows := map[string]*flow{}
	var wg sync.WaitGroup
	defer func() {
		mu.Lock()
		for _, f := range flows {
			f.c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, MaxFrame)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		key := from.String()
		mu.Lock()
		f := flows[key]
		mu.Unlock()
		if f == nil {
			c, err := open(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				continue
			}
			f = &flow{c: c}
			mu.Lock()
			if len(flows) >= MaxUDPFlows {
				var oldK string
				var old *flow
				for k, o := range flows {
					if old == nil || o.last.Before(old.last) {
						oldK, old = k, o
					}
				}
				old.c.Close()
				delete(flows, oldK)
			}
			flows[key] = f
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := make([]byte, MaxFrame)
				for {
					c.SetReadDeadline(time.Now().Add(UDPIdle))
					p, err := ReadFrame(c, b)
					if err != nil {
						break
					}
					pc.WriteTo(p, from)
				}
				c.Close()
				mu.Lock()
				if flows[key] == f {
					delete(flows, key)
				}
				mu.Unlock()
			}()
		}
		mu.Lock()
		f.last = time.Now()
		mu.Unlock()
		if WriteFrame(f.c, buf[:n]) != nil {
			f.c.Close()
		}
	}
}
