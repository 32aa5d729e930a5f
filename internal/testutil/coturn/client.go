package coturn

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"time"
)

// ClientConfig is one turnutils_uclient run: Clients sessions, each
// allocating on the server (plus one probe allocation that uclient leaves
// behind), binding a channel to the echo peer, then sending Messages
// messages of Size bytes every Interval through the relay to the peer,
// which echoes them back.
type ClientConfig struct {
	Server netip.AddrPort // TURN server (required)
	TCP    bool           // reach the server over TCP (-t) instead of UDP
	Send   bool           // relay with Send/Data indications (-s) instead of channels
	Local  netip.Addr     // local address to bind (-L); optional
	Peer   netip.AddrPort // echo peer, turnutils_peer (required)

	// Secret is the REST API shared secret (-W): uclient makes
	// "<expiry>:<User>" credentials from it. Password, when set instead,
	// is sent as is (-w) with User as the username.
	Secret, Password, User string

	Clients  int           // sessions (-m); default 1
	Messages int           // messages per session (-n); default 5
	Size     int           // message bytes (-l); default 100
	Interval time.Duration // per-session interval (-z, whole ms); default 20 ms

	// Netns, when set, runs the client in that named network namespace
	// (`ip netns exec`).
	Netns string
	// ClientToClient relays between the sessions' own allocations (-y)
	// instead of to Peer (whose address is then not sent).
	ClientToClient bool
}

// Args returns the turnutils_uclient arguments. RTCP sessions are off (-c),
// so one session is one allocation.
func (c ClientConfig) Args() ([]string, error) {
	if !c.Server.IsValid() || (!c.Peer.IsValid() && !c.ClientToClient) {
		return nil, errors.New("coturn: ClientConfig needs Server and Peer")
	}
	if c.User == "" || (c.Secret == "") == (c.Password == "") {
		return nil, errors.New("coturn: ClientConfig needs User and one of Secret or Password")
	}
	def := func(v, d int) int {
		if v <= 0 {
			return d
		}
		return v
	}
	ms := int(c.Interval / time.Millisecond)
	args := []string{"-c",
		"-m", strconv.Itoa(def(c.Clients, 1)),
		"-n", strconv.Itoa(def(c.Messages, 5)),
		"-l", strconv.Itoa(def(c.Size, 100)),
		"-z", strconv.Itoa(def(ms, 20)),
		"-p", strconv.Itoa(int(c.Server.Port())),
		"-u", c.User,
	}
	if c.ClientToClient {
		args = append(args, "-y")
	} else {
		args = append(args, "-e", c.Peer.Addr().String(), "-r", strconv.Itoa(int(c.Peer.Port())))
	}
	if c.Secret != "" {
		args = append(args, "-W", c.Secret)
	} else {
		args = append(args, "-w", c.Password)
	}
	if c.TCP {
		args = append(args, "-t")
	}
	if c.Send {
		args = append(args, "-s")
	}
	if c.Local.IsValid() {
		args = append(args, "-L", c.Local.String())
	}
	return append(args, c.Server.Addr().String()), nil
}

// StartClient starts turnutils_uclient; onLine (may be nil) sees each
// output line as it comes, with the time it was read. Wait for the process,
// then ParseReport its Output.
func StartClient(ctx context.Context, cfg ClientConfig, onLine func(time.Time, string)) (*Process, error) {
	args, err := cfg.Args()
	if err != nil {
		return nil, err
	}
	path, err := exec.LookPath(ClientProgram)
	if err != nil {
		return nil, fmt.Errorf("coturn: %w (install Debian package %s)", err, Package)
	}
	if cfg.Netns != "" {
		ip, err := exec.LookPath("ip")
		if err != nil {
			return nil, fmt.Errorf("coturn: run in netns %s: %w", cfg.Netns, err)
		}
		args = append([]string{"netns", "exec", cfg.Netns, path}, args...)
		path = ip
	}
	return start(ctx, path, args, onLine)
}

// RunClient runs turnutils_uclient to completion and parses its report.
func RunClient(ctx context.Context, cfg ClientConfig) (Report, []byte, error) {
	p, err := StartClient(ctx, cfg, nil)
	if err != nil {
		return Report{}, nil, err
	}
	defer p.Stop()
	werr := p.Wait(ctx)
	out := p.Output()
	if werr != nil {
		return Report{}, out, fmt.Errorf("turnutils_uclient: %w; output: %s", werr, lastLines(out, 8))
	}
	r, err := ParseReport(out)
	if err != nil {
		return Report{}, out, fmt.Errorf("%w; output: %s", err, lastLines(out, 8))
	}
	return r, out, nil
}
