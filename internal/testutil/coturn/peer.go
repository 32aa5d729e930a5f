package coturn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"time"
)

// StartPeer starts turnutils_peer, coturn's UDP echo peer, on addr and
// waits until it echoes.
func StartPeer(ctx context.Context, addr netip.AddrPort) (*Process, error) {
	path, err := exec.LookPath(PeerProgram)
	if err != nil {
		return nil, fmt.Errorf("coturn: %w (install Debian package %s)", err, Package)
	}
	p, err := start(ctx, path, []string{"-L", addr.Addr().String(), "-p", strconv.Itoa(int(addr.Port()))}, nil)
	if err != nil {
		return nil, err
	}
	if err := waitEcho(addr, 5*time.Second, p.Done()); err != nil {
		p.Stop()
		return nil, fmt.Errorf("turnutils_peer not ready: %w; output: %s", err, lastLines(p.Output(), 5))
	}
	return p, nil
}

func waitEcho(addr netip.AddrPort, timeout time.Duration, gone <-chan struct{}) error {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return err
	}
	defer conn.Close()
	probe := []byte("keymesh-echo-probe")
	buf := make([]byte, 64)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		select {
		case <-gone:
			return errors.New("process exited")
		default:
		}
		conn.Write(probe)
		conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := conn.Read(buf); err == nil && bytes.Equal(buf[:n], probe) {
			return nil
		}
	}
	return fmt.Errorf("no echo from %s in %s", addr, timeout)
}
