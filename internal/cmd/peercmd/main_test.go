package peercmd

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/flagenv"

	"github.com/keymesh/keymesh/internal/testutil/syncbuf"
)

// run runs the CLI in-process and returns exit code, stdout and stderr.
func run(t *testing.T, ctx context.Context, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(ctx, args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func newID(t *testing.T) crypto.PeerID {
	t.Helper()
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	return id.ID()
}

func TestUsageErrors(t *testing.T) {
	id := newID(t).String()
	srv := "127.0.0.1:3478#" + id
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"--json"}, "flags go after the command"},
		{[]string{"help", "bogus"}, `unknown command "bogus"`},
		{[]string{"ping"}, "peer ping: missing <peer-id|overlay-addr>"},
		{[]string{"ping", "notapeer"}, `"notapeer" is not a peer ID, overlay address or name`},
		{[]string{"ping", "fd00::1"}, "is not a peer ID, overlay address or name"},
		{[]string{"ping", id, "--count", "-1"}, "--count -1"},
		{[]string{"ping", id, "--count", "x"}, `invalid value "x" for flag --count`},
		{[]string{"ping", id, "--bogus"}, "unknown flag --bogus"},
		{[]string{"ping", id, "--interval"}, "flag --interval needs a value"},
		{[]string{"ping", id, "extra"}, `unexpected argument "extra"`},
		{[]string{"pipe"}, "missing <peer-id|overlay-addr>"},
		{[]string{"pipe", id, "--port", "70000"}, "--port 70000"},
		{[]string{"listen", "x"}, `unexpected argument "x"`},
		{[]string{"status", "x"}, `unexpected argument "x"`},
		{[]string{"up"}, "--server is required"},
		{[]string{"up", "--server", "127.0.0.1:3478"}, "missing #<server-id>"},
		{[]string{"up", "--server", "nohost#" + id}, "is not host:port"},
		{[]string{"up", "--server", "127.0.0.1:3478#abc"}, "is not a server ID"},
		{[]string{"up", "--server", srv, "--allow", "zzz"}, `--allow: bad allow rule "zzz"`},
		{[]string{"up", "--server", srv, "--key-env", "KEYMESH_TEST_NEVER_SET"}, "--key-env KEYMESH_TEST_NEVER_SET: the variable is empty or not set"},
		{[]string{"up", "--server", srv, "--name", "1web"}, "--name: name \"1web\""},
		{[]string{"up", "--server", srv, "--dns", "0.0.0.0:53"}, `--dns "0.0.0.0:53": want a loopback or overlay ip:port`},
		{[]string{"up", "--server", srv, "--dns", "overlay"}, `--dns overlay: needs --tun`},
		{[]string{"up", "--server", srv, "--socks5", "1080"}, `--socks5 "1080"`},
		{[]string{"up", "--server", srv, "--expose", "0"}, `--expose "0"`},
		{[]string{"up", "--server", srv, "--listen", "nope"}, `--listen "nope"`},
		{[]string{"up", "--server", srv, "--log-level", "loud"}, `log level "loud"`},
		{[]string{"up", "--server", srv, "--log-format", "xml"}, `log format "xml"`},
		{[]string{"up", "--server", srv, "--reflect-rate", "0"}, "--reflect-rate 0: give 1 or more"},
		{[]string{"up", "--server", srv, "--max-birthday-sockets", "-1"}, "--max-birthday-sockets -1"},
		{[]string{"forward", "80"}, "missing <peer>:<port>"},
		{[]string{"forward", "x", id + ":80"}, `local port "x"`},
		{[]string{"forward", "80", id}, "want <peer>:<port>"},
		{[]string{"forward", "80", "bad:80"}, `"bad" is not a peer ID`},
		{[]string{"forward", "80", id + ":0"}, `port "0"`},
		{[]string{"expose"}, "missing <port>"},
		{[]string{"expose", "0"}, `port "0"`},
		{[]string{"expose", "--off", "--bg", "80"}, "--off and --bg"},
		{[]string{"keygen", "x"}, `unexpected argument "x"`},
	} {
		code, out, errs := run(t, context.Background(), "", tc.args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", tc.args, code, errs)
			continue
		}
		if out != "" {
			t.Errorf("%v: wrote to stdout: %q", tc.args, out)
		}
		if strings.Count(errs, "\n") != 1 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: stderr %q, want one line containing %q", tc.args, errs, tc.want)
		}
	}
}

func TestNoArgs(t *testing.T) {
	code, _, errs := run(t, context.Background(), "")
	if code != 2 || !strings.Contains(errs, "usage: peer <command>") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

func TestHelp(t *testing.T) {
	code, out, _ := run(t, context.Background(), "", "help")
	if code != 0 {
		t.Fatalf("help: exit %d", code)
	}
	for _, c := range commands() {
		if !strings.Contains(out, "  "+c.name+" ") {
			t.Errorf("help does not list %s", c.name)
		}
		for _, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
			code, out, errs := run(t, context.Background(), "", args...)
			if code != 0 || !strings.HasPrefix(out, "usage: peer "+c.name) || errs != "" {
				t.Errorf("%v: exit %d, stdout %.40q, stderr %q", args, code, out, errs)
			}
		}
	}
	_, out, _ = run(t, context.Background(), "", "ping", "--help")
	for _, want := range []string{"--count int  [$KEYMESH_COUNT]", "--json  [$KEYMESH_JSON]", "(default 4)", "rtt_ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("ping --help lacks %q:\n%s", want, out)
		}
	}
	if code, out, _ := run(t, context.Background(), "", "version"); code != 0 || !strings.HasPrefix(out, "peer ") {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestParseArgsInterspersedAndEnv(t *testing.T) {
	env := map[string]string{"KEYMESH_COUNT": "7", "KEYMESH_JSON": "true", "KEYMESH_ALLOW": "a, b"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	newFS := func() (*flag.FlagSet, *int, *bool, *[]string) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		n := fs.Int("count", 1, "")
		j := fs.Bool("json", false, "")
		var allow flagenv.Strings
		fs.Var(&allow, "allow", "")
		return fs, n, j, (*[]string)(&allow)
	}
	fs, n, j, allow := newFS()
	pos, err := parseArgs(fs, []string{"peerB", "--count", "3", "x", "--", "--json"}, lookup)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(pos, " ") != "peerB x --json" || *n != 3 || !*j || strings.Join(*allow, "|") != "a|b" {
		t.Errorf("pos %q count %d json %v allow %q", pos, *n, *j, *allow)
	}
	fs, n, _, _ = newFS()
	if _, err := parseArgs(fs, nil, lookup); err != nil || *n != 7 {
		t.Errorf("env count: %d, %v", *n, err)
	}
	env["KEYMESH_COUNT"] = "many"
	fs, _, _, _ = newFS()
	if _, err := parseArgs(fs, nil, lookup); err == nil || !strings.Contains(err.Error(), "KEYMESH_COUNT") {
		t.Errorf("bad env: %v", err)
	}
}

func TestEnvBadValueExit2(t *testing.T) {
	t.Setenv("KEYMESH_COUNT", "lots")
	code, _, errs := run(t, context.Background(), "", "ping", newID(t).String())
	if code != 2 || !strings.Contains(errs, "KEYMESH_COUNT") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

func TestKeygenAndID(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "sub", "a.key")
	code, out, errs := run(t, context.Background(), "", "keygen", "--key", key)
	if code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errs)
	}
	st, err := os.Stat(key)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", st, err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("keygen stdout %q", out)
	}
	id, err := crypto.ParsePeerID(lines[0])
	if err != nil || lines[1] != id.OverlayAddr().String() {
		t.Fatalf("keygen stdout %q: %v", out, err)
	}
	before, _ := os.ReadFile(key)
	code, _, errs = run(t, context.Background(), "", "keygen", "--key", key)
	after, _ := os.ReadFile(key)
	if code != 1 || !strings.Contains(errs, "refusing to overwrite") || !bytes.Equal(before, after) {
		t.Errorf("second keygen: exit %d, %q", code, errs)
	}
	code, out2, _ := run(t, context.Background(), "", "id", "--key", key)
	if code != 0 || out2 != out {
		t.Errorf("id: exit %d, %q, want %q", code, out2, out)
	}
	t.Setenv("KEYMESH_KEY", key)
	code, js, _ := run(t, context.Background(), "", "id", "--json")
	var v struct{ ID, Overlay string }
	if code != 0 || json.Unmarshal([]byte(js), &v) != nil || v.ID != id.String() || v.Overlay != id.OverlayAddr().String() {
		t.Errorf("id --json via KEYMESH_KEY: exit %d, %q", code, js)
	}
	code, _, errs = run(t, context.Background(), "", "id", "--key", filepath.Join(dir, "none.key"))
	if code != 1 || !strings.Contains(errs, "peer keygen") {
		t.Errorf("id of missing key: exit %d, %q", code, errs)
	}
	os.Chmod(key, 0o644)
	code, _, errs = run(t, context.Background(), "", "id", "--key", key)
	if code != 1 || !strings.Contains(errs, "chmod 600") || strings.Count(errs, "\n") != 1 {
		t.Errorf("id of exposed key: exit %d, %q", code, errs)
	}
}

func TestDefaultKeyPath(t *testing.T) {
	env := map[string]string{"XDG_CONFIG_HOME": "/cfg", "HOME": "/home/u"}
	get := func(k string) string { return env[k] }
	if got := defaultKeyPath(get); got != "/cfg/keymesh/peer.key" {
		t.Errorf("with XDG_CONFIG_HOME: %s", got)
	}
	delete(env, "XDG_CONFIG_HOME")
	if got := defaultKeyPath(get); got != "/home/u/.config/keymesh/peer.key" {
		t.Errorf("with HOME: %s", got)
	}
}

// syncBuffer is a buffer safe for a command writing while the test reads.
type syncBuffer = syncbuf.Buffer

// waitLine waits for a line containing want in b.
func waitLine(t *testing.T, b *syncBuffer, want string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(b.String(), "\n") {
			if strings.Contains(l, want) {
				return l
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no line with %q within %s; got:\n%s", want, d, b.String())
	return ""
}
