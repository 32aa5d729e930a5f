package peercmd

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // the TURN REST API convention is HMAC-SHA1
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/testutil/coturn"
	"github.com/keymesh/keymesh/internal/testutil/debpkg"
)

// TestE2ETURNCredentials crosses the boundary between the binaries: the
// rendezvous and the relay read one secret file (made the usual way, base64
// text), a peer registers and gets TURN credentials in `peer status
// --json` as WebRTC iceServers, and coturn's turnutils_uclient allocates
// with them at the relay and carries data to an echo peer, over UDP and
// TCP. Credentials minted the coturn way from the file's text (what a
// WebRTC backend already does) work too. The old rendezvous decoded the
// base64 text while the relay used it as is, so every credential it handed
// out was refused.
func TestE2ETURNCredentials(t *testing.T) {
	if testing.Short() {
		ci.Skip(t, "end-to-end test: starts processes")
	}
	debpkg.Require(t, coturn.ClientProgram, coturn.Package)
	debpkg.Require(t, coturn.PeerProgram, coturn.Package)

	dir := t.TempDir()
	raw := make([]byte, 32)
	rand.Read(raw)
	text := base64.StdEncoding.EncodeToString(raw) // `head -c 32 /dev/urandom | base64`
	secretFile := filepath.Join(dir, "turn.secret")
	if err := os.WriteFile(secretFile, []byte(text+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	relay := startProc(t, "relay", nil, nil, "relay", "--dev", "--listen", "127.0.0.1:0", "--admin", "", "--log-format", "json",
		"--turn-listen", "127.0.0.1:0", "--turn-tcp-listen", "127.0.0.1:0", "--turn-secret-file", secretFile,
		// The echo peer is on loopback, which a relay refuses unless told.
		"--allow-destinations", "127.0.0.1/32")
	line := waitLine(t, &relay.err, `"relay ready"`, 10*time.Second)
	var ready struct {
		UDP     string
		TURNUDP string `json:"turn_udp"`
		TURNTCP string `json:"turn_tcp"`
	}
	if err := json.Unmarshal([]byte(line), &ready); err != nil || ready.TURNUDP == "" || ready.TURNTCP == "" {
		t.Fatalf("relay ready line %q: %v", line, err)
	}
	rz := startProc(t, "rendezvous", nil, nil, "rendezvous", "--listen", "127.0.0.1:0", "--admin", "",
		"--key", filepath.Join(dir, "rz.key"), "--relay", ready.UDP, "--turn-secret-file", secretFile,
		"--turn-uri", "turn:"+ready.TURNUDP+"?transport=udp", "--turn-uri", "turn:"+ready.TURNTCP+"?transport=tcp")
	line = waitLine(t, &rz.out, "connect string: ", 10*time.Second)

	m := &mesh{t: t, dir: shortDir(t), ids: map[string]string{}, socks: map[string]string{}}
	m.connect = strings.TrimSpace(strings.TrimPrefix(line, "connect string: "))
	id := m.keygen("w")
	m.up("w")
	code, out, errs := m.peer("w", "status", "--json")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errs)
	}
	var st daemon.DaemonStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.ICEServers) != 1 || len(st.ICEServers[0].URLs) != 2 {
		t.Fatalf("ice_servers %+v in %s", st.ICEServers, out)
	}
	ice := st.ICEServers[0]
	if !strings.HasSuffix(ice.Username, ":"+id) {
		t.Fatalf("TURN username %q: want <expiry>:%s (the full peer ID)", ice.Username, id)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	lo := netip.MustParseAddr("127.0.0.1")
	peerPort, err := coturn.FreePort(lo)
	if err != nil {
		t.Fatal(err)
	}
	echo := netip.AddrPortFrom(lo, peerPort)
	peer, err := coturn.StartPeer(ctx, echo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(peer.Stop)

	// The coturn way: username "<expiry>:<name>", password
	// base64(HMAC-SHA1(the file's text, username)).
	coturnUser := fmt.Sprintf("%d:webrtc-backend-user", time.Now().Add(time.Hour).Unix())
	mac := hmac.New(sha1.New, []byte(text))
	mac.Write([]byte(coturnUser))
	coturnPass := base64.StdEncoding.EncodeToString(mac.Sum(nil))

	udp, tcp := netip.MustParseAddrPort(ready.TURNUDP), netip.MustParseAddrPort(ready.TURNTCP)
	for _, tc := range []struct {
		name                   string
		server                 netip.AddrPort
		tcp                    bool
		user, password, secret string
	}{
		{"ice_servers over udp", udp, false, ice.Username, ice.Credential, ""},
		{"ice_servers over tcp", tcp, true, ice.Username, ice.Credential, ""},
		{"coturn-minted over udp", udp, false, coturnUser, coturnPass, ""},
		{"uclient -W with the file's text", udp, false, "uclient-rest", "", text},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, out, err := coturn.RunClient(ctx, coturn.ClientConfig{
				Server: tc.server, TCP: tc.tcp, Peer: echo,
				User: tc.user, Password: tc.password, Secret: tc.secret,
				Messages: 20, Size: 200, Interval: 10 * time.Millisecond,
			})
			if err != nil {
				t.Fatalf("turnutils_uclient: %v\n%s", err, tail(string(out)))
			}
			t.Logf("sent %d, received %d, lost %d", r.Sent, r.Received, r.Lost)
			if r.Sent == 0 || r.Received == 0 {
				t.Fatalf("no data carried: sent %d, received %d\n%s", r.Sent, r.Received, tail(string(out)))
			}
		})
	}

	// The control: credentials keyed with the decoded bytes (what the old
	// rendezvous computed) are refused, so the runs above could fail.
	mac = hmac.New(sha1.New, raw)
	mac.Write([]byte(coturnUser))
	_, out2, err := coturn.RunClient(ctx, coturn.ClientConfig{
		Server: udp, Peer: echo, User: coturnUser, Password: base64.StdEncoding.EncodeToString(mac.Sum(nil)),
		Messages: 2,
	})
	if err == nil {
		t.Fatalf("credentials from the decoded secret allocated:\n%s", tail(string(out2)))
	}
}

// shortDir is a temporary directory with a short path (Unix socket paths
// are limited), removed at the end of the test.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kmt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
