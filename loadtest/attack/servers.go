package attack

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/streamclient"
)

// Ports of the servers on srvAddr.
const (
	rendezvousPort = 3478
	relayPort      = 3479
	turnPort       = 3480
	streamPort     = 443
	altPort        = 3488 // the RFC 5780 alternate port (on both addresses)
	rzAdminPort    = 9090
	relayAdminPort = 9091
)

// Binaries are the programs the suite runs. Peer is optional: without it
// the peer-reflect attack reports an error.
type Binaries struct {
	Rendezvous, Relay, Peer string
}

// servers are one run of the rendezvous and the relay in the lab.
type servers struct {
	rz, relay *proc
	// rzAddr and rzKey are the rendezvous' address and pinned key.
	rzAddr    netip.AddrPort
	rzKey     crypto.PeerID
	relayAddr netip.AddrPort
	turnAddr  netip.AddrPort
	stream    streamclient.Target
	streamID  crypto.PeerID
	// token is the join token legitimate peers send (nil: none needed).
	token []byte
}

// proc is a server process.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  *tailBuffer
}

// serverConfig says how to start the servers.
type serverConfig struct {
	bins                    Binaries
	work                    string
	joinToken               bool
	rendezvousArgs, relArgs []string
}

// startServers starts the relay (ticket relay, TURN over UDP and TCP, TLS
// stream relay) and the rendezvous (advertising all three and handing out
// TURN credentials) in the lab's server namespace.
func startServers(ctx context.Context, lab *Lab, cfg serverConfig) (*servers, error) {
	s := &servers{
		rzAddr:    netip.AddrPortFrom(srvAddr, rendezvousPort),
		relayAddr: netip.AddrPortFrom(srvAddr, relayPort),
		turnAddr:  netip.AddrPortFrom(srvAddr, turnPort),
	}
	if err := os.MkdirAll(cfg.work, 0o700); err != nil {
		return nil, err
	}
	secret := filepath.Join(cfg.work, "turn.secret")
	if err := os.WriteFile(secret, []byte("attack-suite-turn-secret\n"), 0o600); err != nil {
		return nil, err
	}
	tickets := filepath.Join(cfg.work, "tickets.keys")
	if err := os.WriteFile(tickets, []byte(crypto.NewTicketKeyLine(1)), 0o600); err != nil {
		return nil, err
	}
	relayID, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return nil, err
	}
	relayKey := filepath.Join(cfg.work, "relay.key")
	if err := crypto.WriteKeyFile(relayKey, relayID); err != nil {
		return nil, err
	}
	streamAP := netip.AddrPortFrom(srvAddr, streamPort)
	streamURL := fmt.Sprintf("wss://%s%s#%s", streamAP, streamclient.Path, relayID.ID())
	if s.stream, err = streamclient.ParseTarget(streamURL); err != nil {
		return nil, err
	}
	s.streamID = relayID.ID()

	relayArgs := append([]string{
		"--listen", s.relayAddr.String(),
		"--admin", fmt.Sprintf("127.0.0.1:%d", relayAdminPort),
		"--ticket-key-file", tickets,
		"--turn-listen", s.turnAddr.String(),
		"--turn-tcp-listen", s.turnAddr.String(),
		"--turn-secret-file", secret,
		"--tls-listen", streamAP.String(),
		"--key", relayKey,
		"--log-level", "warn",
	}, cfg.relArgs...)
	s.relay, err = startProc(ctx, lab, lab.Srv, "relay", cfg.bins.Relay, relayArgs, nil)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, lab, s.relay, relayAdminPort); err != nil {
		s.stop()
		return nil, err
	}

	rzArgs := append([]string{
		"--listen", s.rzAddr.String(),
		"--alt-listen", netip.AddrPortFrom(srvAltAddr, altPort).String(),
		"--key", filepath.Join(cfg.work, "rendezvous.key"),
		"--admin", fmt.Sprintf("127.0.0.1:%d", rzAdminPort),
		"--public-addr", srvAddr.String(),
		"--relay", s.relayAddr.String(),
		"--stream-relay", streamURL,
		"--turn-secret-file", secret,
		"--turn-uri", "turn:" + s.turnAddr.String(),
		"--instance", "attack-lab",
		"--log-level", "warn",
	}, cfg.rendezvousArgs...)
	if cfg.joinToken {
		s.token = make([]byte, 32)
		_, _ = rand.Read(s.token)
		f := filepath.Join(cfg.work, "join.token")
		if err := os.WriteFile(f, []byte(hex.EncodeToString(s.token)+"\n"), 0o600); err != nil {
			s.stop()
			return nil, err
		}
		rzArgs = append(rzArgs, "--join-token-file", f)
	}
	connect := make(chan string, 1)
	s.rz, err = startProc(ctx, lab, lab.Srv, "rendezvous", cfg.bins.Rendezvous, rzArgs, func(line string) {
		if v, ok := strings.CutPrefix(line, "connect string: "); ok {
			select {
			case connect <- strings.TrimSpace(v):
			default:
			}
		}
	})
	if err != nil {
		s.stop()
		return nil, err
	}
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case c := <-connect:
		_, key, err := rzclient.ParseServer(c)
		if err != nil {
			s.stop()
			return nil, fmt.Errorf("attack: rendezvous connect string %q: %w", c, err)
		}
		s.rzKey = key
	case <-s.rz.done:
		s.stop()
		return nil, fmt.Errorf("attack: the rendezvous ended at start:\n%s", s.rz.log.String())
	case <-t.C:
		s.stop()
		return nil, fmt.Errorf("attack: the rendezvous printed no connect string in 20s:\n%s", s.rz.log.String())
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
	if err := waitReady(ctx, lab, s.rz, rzAdminPort); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// stop ends both servers (SIGTERM, then SIGKILL after 3 s).
func (s *servers) stop() {
	for _, p := range []*proc{s.rz, s.relay} {
		if p != nil {
			p.stop()
		}
	}
}

// alive returns an error naming a server that has ended.
func (s *servers) alive() error {
	for _, p := range []*proc{s.rz, s.relay} {
		select {
		case <-p.done:
			return fmt.Errorf("%s ended: %v; its log ends:\n%s", p.name, p.cmd.ProcessState, p.log.String())
		default:
		}
	}
	return nil
}

// startProc starts bin in namespace ns; onLine (may be nil) sees each line
// of its output.
func startProc(ctx context.Context, lab *Lab, ns, name, bin string, args []string, onLine func(string)) (*proc, error) {
	cmd := lab.Command(ctx, ns, bin, args...)
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: &tailBuffer{max: 8 << 10}}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 3 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("attack: start %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.log.add(sc.Text())
			if onLine != nil {
				onLine(sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitReady polls a server's /readyz (on the server namespace's loopback).
func waitReady(ctx context.Context, lab *Lab, p *proc, port int) error {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			return dialTCP(ctx, lab.Srv, netip.Addr{}, ap)
		},
	}}
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("attack: %s ended at start:\n%s", p.name, p.log.String())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("attack: %s not ready in 20s:\n%s", p.name, p.log.String())
}

// procSample is a server's CPU time and memory at one instant.
type procSample struct {
	cpu time.Duration
	rss int64 // bytes
	fds int
}

// sampleProc reads /proc/<pid>/stat and status.
func sampleProc(pid int) (procSample, error) {
	var s procSample
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name (which may hold spaces) start at ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return s, errors.New("attack: odd /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return s, errors.New("attack: short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.cpu = time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			s.rss = kb << 10
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		s.fds = len(ents)
	}
	return s, nil
}

// tailBuffer keeps the last max bytes of a process's output.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(append(t.b, line...), '\n')
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
