package coturn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pion/stun/v4"
)

// ServerConfig configures a coturn turnserver for tests and benchmarks:
// REST-API credentials from a static secret, no TLS/DTLS, no CLI, loopback
// peers allowed, no quotas.
type ServerConfig struct {
	// Dir holds the config file, pid file and user database. Required.
	Dir string
	// Listen is the UDP and TCP listening address. Required.
	Listen netip.AddrPort
	// RelayIP is the relay endpoint address. Default: Listen's address.
	RelayIP netip.Addr
	// Secret is static-auth-secret; Realm the realm. Required.
	Secret, Realm string
	// MinPort and MaxPort bound relay ports. Default 10000-31999, below
	// Linux's ephemeral range so that relay ports do not collide with
	// client sockets on the same machine.
	MinPort, MaxPort int
	// Threads is relay-threads; 0 leaves coturn's default (one per CPU).
	Threads int
	// Extra lines appended to the config file.
	Extra []string
}

// config returns the turnserver configuration file text.
func (c ServerConfig) config() string {
	relay := c.RelayIP
	if !relay.IsValid() {
		relay = c.Listen.Addr()
	}
	minPort, maxPort := c.MinPort, c.MaxPort
	if minPort == 0 {
		minPort = 10000
	}
	if maxPort == 0 {
		maxPort = 31999
	}
	lines := []string{
		"listening-ip=" + c.Listen.Addr().String(),
		"listening-port=" + strconv.Itoa(int(c.Listen.Port())),
		"relay-ip=" + relay.String(),
		"min-port=" + strconv.Itoa(minPort),
		"max-port=" + strconv.Itoa(maxPort),
		"use-auth-secret",
		"static-auth-secret=" + c.Secret,
		"realm=" + c.Realm,
		"user-quota=0",
		"total-quota=0",
		"no-tls",
		"no-dtls",
		"no-cli",
		"allow-loopback-peers",
		"log-file=stdout",
		"simple-log",
		"pidfile=" + filepath.Join(c.Dir, "turnserver.pid"),
		"userdb=" + filepath.Join(c.Dir, "turndb"),
	}
	if c.Threads > 0 {
		lines = append(lines, "relay-threads="+strconv.Itoa(c.Threads))
	}
	lines = append(lines, c.Extra...)
	return strings.Join(lines, "\n") + "\n"
}

// StartServer writes a config into cfg.Dir, starts turnserver and waits
// until it answers a STUN Binding request on its UDP port.
func StartServer(ctx context.Context, cfg ServerConfig, onLine func(time.Time, string)) (*Process, error) {
	if cfg.Dir == "" || !cfg.Listen.IsValid() || cfg.Secret == "" || cfg.Realm == "" {
		return nil, errors.New("coturn: ServerConfig needs Dir, Listen, Secret and Realm")
	}
	path, err := exec.LookPath(ServerProgram)
	if err != nil {
		return nil, fmt.Errorf("coturn: %w (install Debian package %s)", err, Package)
	}
	conf := filepath.Join(cfg.Dir, "turnserver.conf")
	if err := os.WriteFile(conf, []byte(cfg.config()), 0o600); err != nil {
		return nil, err
	}
	p, err := start(ctx, path, []string{"-c", conf}, onLine)
	if err != nil {
		return nil, err
	}
	if err := WaitSTUN(ctx, cfg.Listen, 10*time.Second, p.Done()); err != nil {
		p.Stop()
		return nil, fmt.Errorf("turnserver not ready: %w; output: %s", err, lastLines(p.Output(), 10))
	}
	return p, nil
}

// WaitSTUN sends STUN Binding requests to addr over UDP until one is
// answered, for at most timeout; it gives up early when gone is closed.
func WaitSTUN(ctx context.Context, addr netip.AddrPort, timeout time.Duration, gone <-chan struct{}) error {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return err
	}
	defer conn.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		select {
		case <-gone:
			return errors.New("process exited")
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if _, err := conn.Write(req.Raw); err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := conn.Read(buf)
		if err != nil {
			continue
		}
		var res stun.Message
		res.Raw = buf[:n]
		if res.Decode() == nil && res.TransactionID == req.TransactionID {
			return nil
		}
	}
	return fmt.Errorf("no STUN answer from %s in %s", addr, timeout)
}

// lastLines returns the last n lines of b, for error messages.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// FreePort returns a port that is free for both UDP and TCP on ip at the
// moment of the call (another process may take it before it is used).
func FreePort(ip netip.Addr) (uint16, error) {
	for range 20 {
		u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return 0, err
		}
		port := u.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		t, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, port)))
		u.Close()
		if err != nil {
			continue
		}
		t.Close()
		return port, nil
	}
	return 0, errors.New("coturn: no port free for both UDP and TCP")
}
