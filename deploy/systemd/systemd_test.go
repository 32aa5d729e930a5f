// Package systemd_test checks the systemd units in this folder: the
// hardening every unit must keep (read from the files), and, with
// systemd-analyze, that systemd accepts them (verify) and rates their
// exposure low (security --offline).
package systemd_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/debpkg"
)

var units = []string{"rendezvous", "relay", "peer"}

// maxExposure is the highest `systemd-analyze security` exposure accepted
// (0 is best, 10 worst; the units score about 1.1 to 1.4 with systemd 252).
const maxExposure = 2.0

// unitFile is a parsed unit: every Key=value line in order, by section.
type unitFile map[string][]string // "Section/Key" -> values

func parseUnit(text string) unitFile {
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if ok {
				u[section+"/"+k] = append(u[section+"/"+k], v)
			}
		}
	}
	return u
}

// last returns the effective value of a single-valued setting.
func (u unitFile) last(key string) string {
	v := u["Service/"+key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// checkHardening reports what a unit for server name lacks.
func checkHardening(name, text string) []string {
	u := parseUnit(text)
	var out []string
	want := map[string]string{
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectControlGroups":    "yes",
		"RestrictNamespaces":      "yes",
		"RestrictSUIDSGID":        "yes",
		"LockPersonality":         "yes",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallArchitectures": "native",
		"StateDirectory":          "keymesh-" + name,
		"ExecStart":               "/usr/local/bin/keymesh-" + name,
	}
	if name == "peer" {
		want["ExecStart"] = "/usr/local/bin/keymesh-peer up"
	}
	for k, v := range want {
		if got := u.last(k); got != v {
			out = append(out, fmt.Sprintf("%s=%q, want %q", k, got, v))
		}
	}
	if u.last("User") == "" && u.last("DynamicUser") != "yes" {
		out = append(out, "runs as root: set User= or DynamicUser=yes")
	}
	if u.last("User") == "root" {
		out = append(out, "User=root")
	}
	if !contains(u["Service/SystemCallFilter"], "@system-service") {
		out = append(out, "no SystemCallFilter=@system-service")
	}
	if !contains(u["Service/EnvironmentFile"], "-/etc/keymesh/"+name+".env") {
		out = append(out, "no EnvironmentFile=-/etc/keymesh/"+name+".env")
	}
	fams := strings.Fields(u.last("RestrictAddressFamilies"))
	if len(fams) == 0 {
		out = append(out, "no RestrictAddressFamilies")
	}
	for _, f := range fams {
		if !contains([]string{"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}, f) {
			out = append(out, "RestrictAddressFamilies allows "+f)
		}
	}
	// Capabilities: only CAP_NET_BIND_SERVICE, and only for the relay (it
	// binds TCP 443; the others' ports are above 1024).
	wantCaps := ""
	if name == "relay" {
		wantCaps = "CAP_NET_BIND_SERVICE"
	}
	if _, ok := u.lastOK("CapabilityBoundingSet"); !ok {
		out = append(out, "no CapabilityBoundingSet")
	}
	for _, k := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		if got := strings.Join(strings.Fields(u.last(k)), " "); got != wantCaps {
			out = append(out, fmt.Sprintf("%s=%q, want %q", k, got, wantCaps))
		}
	}
	return out
}

func (u unitFile) lastOK(key string) (string, bool) {
	v, ok := u["Service/"+key]
	if !ok || len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func readUnit(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("keymesh-" + name + ".service")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestUnitsHardened(t *testing.T) {
	for _, name := range units {
		for _, p := range checkHardening(name, readUnit(t, name)) {
			t.Errorf("keymesh-%s.service: %s", name, p)
		}
	}
}

// TestHardeningCheckCatchesGaps makes sure checkHardening can fail.
func TestHardeningCheckCatchesGaps(t *testing.T) {
	good := readUnit(t, "relay")
	cases := map[string]struct{ old, new, want string }{
		"no NoNewPrivileges":  {"NoNewPrivileges=yes\n", "", "NoNewPrivileges"},
		"root":                {"User=keymesh\n", "User=root\n", "User=root"},
		"extra capability":    {"CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_ADMIN", "CapabilityBoundingSet="},
		"packet sockets":      {"RestrictAddressFamilies=AF_INET AF_INET6", "RestrictAddressFamilies=AF_PACKET AF_INET AF_INET6", "allows AF_PACKET"},
		"no syscall filter":   {"SystemCallFilter=@system-service\n", "", "@system-service"},
		"wrong env file":      {"EnvironmentFile=-/etc/keymesh/relay.env", "EnvironmentFile=-/etc/keymesh/other.env", "EnvironmentFile"},
		"writable filesystem": {"ProtectSystem=strict", "ProtectSystem=full", "ProtectSystem"},
	}
	for name, tc := range cases {
		if !strings.Contains(good, tc.old) {
			t.Fatalf("%s: keymesh-relay.service has no %q; update the case", name, tc.old)
		}
		bad := strings.Replace(good, tc.old, tc.new, 1)
		found := false
		for _, p := range checkHardening("relay", bad) {
			found = found || strings.Contains(p, tc.want)
		}
		if !found {
			t.Errorf("%s: checkHardening did not report %q: %q", name, tc.want, checkHardening("relay", bad))
		}
	}
}

// stubUnits writes copies of the units whose ExecStart runs /bin/true, as
// systemd-analyze verify wants the program to exist.
func stubUnits(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range units {
		text := strings.Replace(readUnit(t, name), "ExecStart=/usr/local/bin/keymesh-"+name, "ExecStart=/bin/true", 1)
		if err := os.WriteFile(filepath.Join(dir, "keymesh-"+name+".service"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func analyze(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	bin := debpkg.Require(t, "systemd-analyze", "systemd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_COLORS=0")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestSystemdVerify(t *testing.T) {
	dir := stubUnits(t)
	for _, name := range units {
		out, err := analyze(t, dir, "verify", "./keymesh-"+name+".service")
		if err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze verify keymesh-%s.service: %v\n%s", name, err, out)
		}
	}
}

var exposureRe = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

func TestSystemdSecurityExposure(t *testing.T) {
	dir := stubUnits(t)
	for _, name := range units {
		out, err := analyze(t, dir, "security", "--offline=yes", "--no-pager", "./keymesh-"+name+".service")
		m := exposureRe.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security keymesh-%s.service printed no exposure (%v):\n%s", name, err, out)
		}
		score, _ := strconv.ParseFloat(m[1], 64)
		t.Logf("keymesh-%s.service: exposure %.1f", name, score)
		if score > maxExposure {
			t.Errorf("keymesh-%s.service: exposure %.1f, want at most %.1f:\n%s", name, score, maxExposure, out)
		}
	}
}
