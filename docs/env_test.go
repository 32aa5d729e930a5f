package docs_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEnvVariables runs each binary configured by KEYMESH_* variables alone
// and checks that they took effect, and that a flag wins over a variable.
func TestEnvVariables(t *testing.T) {
	work := t.TempDir()
	home := filepath.Join(work, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}

	t.Run("rendezvous", func(t *testing.T) {
		key := filepath.Join(work, "env-rendezvous.key")
		p := startProc(t, work, baseEnv(home,
			"KEYMESH_LISTEN=127.0.0.1:0", "KEYMESH_KEY="+key, "KEYMESH_ADMIN=127.0.0.1:0",
			"KEYMESH_LOG_FORMAT=json", "KEYMESH_INSTANCE=from-env"), "rendezvous")
		admin := rendezvousAdmin(t, p)
		httpGet(t, "http://"+admin+"/healthz") // KEYMESH_ADMIN took effect
		rec := waitJSONLog(t, p, "rendezvous serving")
		if rec["listen"] != nil && !strings.HasPrefix(rec["listen"].(string), "127.0.0.1:") {
			t.Errorf("KEYMESH_LISTEN=127.0.0.1:0 ignored: serving on %v", rec["listen"])
		}
		if rec["instance"] != "from-env" {
			t.Errorf("KEYMESH_INSTANCE=from-env ignored: log says instance %v", rec["instance"])
		}
		if _, err := os.Stat(key); err != nil {
			t.Errorf("KEYMESH_KEY ignored: %v", err)
		}
		if code := p.stop(t); code != 0 {
			t.Errorf("exit %d after SIGTERM", code)
		}
		// A bad value in the environment is refused, naming the variable;
		// the same value given as a flag wins over it.
		r := runCmd(t, work, baseEnv(home, "KEYMESH_LOG_FORMAT=yaml"), "rendezvous", "--version")
		if r.code != 2 || !strings.Contains(r.stderr, "yaml") {
			t.Errorf("KEYMESH_LOG_FORMAT=yaml: exit %d, stderr %q; want exit 2 and a message about it", r.code, r.stderr)
		}
		r = runCmd(t, work, baseEnv(home, "KEYMESH_LOG_FORMAT=yaml"), "rendezvous", "--log-format", "json", "--version")
		if r.code != 0 || strings.TrimSpace(r.stdout) != testVersion {
			t.Errorf("--log-format json did not win over KEYMESH_LOG_FORMAT=yaml: exit %d, %q %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("relay", func(t *testing.T) {
		r := runCmd(t, work, baseEnv(home, "KEYMESH_GEN_TICKET_KEY=true", "KEYMESH_TICKET_KEY_ID=7"), "relay")
		if r.code != 0 || !regexp.MustCompile(`^7 [0-9a-f]{64}\n$`).MatchString(r.stdout) {
			t.Errorf("KEYMESH_GEN_TICKET_KEY/KEYMESH_TICKET_KEY_ID: exit %d, stdout %q, stderr %q; want a line \"7 <64 hex>\"", r.code, r.stdout, r.stderr)
		}
		p := startProc(t, work, baseEnv(home,
			"KEYMESH_DEV=true", "KEYMESH_LISTEN=127.0.0.1:0",
			"KEYMESH_ADMIN=127.0.0.1:0", "KEYMESH_LOG_FORMAT=json", "KEYMESH_TICKET_TTL=42s"), "relay")
		rec := waitJSONLog(t, p, "relay ready")
		if rec["ticket_ttl"] != "42s" {
			t.Errorf("KEYMESH_TICKET_TTL=42s ignored: log says %v", rec["ticket_ttl"])
		}
		if udp, _ := rec["udp"].(string); !strings.HasPrefix(udp, "127.0.0.1:") {
			t.Errorf("KEYMESH_LISTEN=127.0.0.1:0 ignored: serving on %q", udp)
		}
		admin, _ := rec["admin"].(string)
		httpGet(t, "http://"+admin+"/readyz") // KEYMESH_ADMIN took effect
		if code := p.stop(t); code != 0 {
			t.Errorf("exit %d after SIGTERM", code)
		}
	})

	t.Run("peer", func(t *testing.T) {
		key := filepath.Join(work, "env-peer.key")
		env := baseEnv(home, "KEYMESH_KEY="+key)
		gen := runCmd(t, work, env, "peer", "keygen")
		if gen.code != 0 {
			t.Fatalf("KEYMESH_KEY=%s peer keygen: exit %d: %s", key, gen.code, gen.stderr)
		}
		id := runCmd(t, work, append(env, "KEYMESH_JSON=true"), "peer", "id")
		var got struct{ ID, Overlay string }
		if err := json.Unmarshal([]byte(id.stdout), &got); err != nil || got.ID == "" {
			t.Fatalf("KEYMESH_JSON=true peer id: %q (%v)", id.stdout, err)
		}
		if !strings.Contains(gen.stdout, got.ID) {
			t.Errorf("peer id read another key than KEYMESH_KEY: keygen said %q, id %q", gen.stdout, got.ID)
		}
		// The daemon, configured by variables only, registers with a
		// rendezvous server and answers on the socket KEYMESH_SOCKET names.
		rz := startProc(t, work, baseEnv(home), "rendezvous",
			"--listen", "127.0.0.1:0", "--key", filepath.Join(work, "peer-rz.key"), "--admin", "")
		connect := strings.TrimPrefix(rz.waitLine(t, false, "its connect string", func(l string) bool {
			return strings.HasPrefix(l, "connect string: ")
		}), "connect string: ")
		sock := filepath.Join(work, "s", "peer.sock")
		up := startProc(t, work, append(env, "KEYMESH_SERVER="+connect, "KEYMESH_SOCKET="+sock,
			"KEYMESH_LISTEN=127.0.0.1:0", "KEYMESH_LOG_FORMAT=json"), "peer", "up")
		waitJSONLog(t, up, "registered with the rendezvous server")
		st := runCmd(t, work, baseEnv(home, "KEYMESH_SOCKET="+sock, "KEYMESH_JSON=1"), "peer", "status")
		var status struct {
			ID         string
			Registered bool
		}
		if err := json.Unmarshal([]byte(st.stdout), &status); err != nil || status.ID != got.ID || !status.Registered {
			t.Errorf("KEYMESH_SOCKET peer status: exit %d %q %q (%v); want the daemon of %s, registered", st.code, st.stdout, st.stderr, err, got.ID)
		}
		if code := up.stop(t); code != 0 {
			t.Errorf("peer up: exit %d after SIGTERM", code)
		}
		rz.stop(t)
	})
}
