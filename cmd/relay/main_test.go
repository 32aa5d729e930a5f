package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/relayclient"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/wire"

	"github.com/keymesh/keymesh/internal/testutil/bintest"
	"github.com/keymesh/keymesh/internal/testutil/metricstest"
)

// buildRelay builds cmd/relay (with the other commands) into a temporary
// directory.
func buildRelay(t *testing.T) string { t.Helper(); return bintest.BuildT(t).Relay }

func TestProcess(t *testing.T) {
	if testing.Short() {
		ci.Skip(t, "builds and runs the binary")
	}
	bin := buildRelay(t)

	t.Run("bad flag", func(t *testing.T) {
		var stderr bytes.Buffer
		cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--no-such-flag")
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("exit: %v, want status 2", err)
		}
		if s := stderr.String(); strings.Count(s, "\n") != 1 || !strings.Contains(s, "no-such-flag") {
			t.Fatalf("stderr %q: want one line naming the flag", s)
		}
	})

	t.Run("no key", func(t *testing.T) {
		var stderr bytes.Buffer
		cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--admin", "")
		cmd.Env = cleanEnv()
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("exit: %v, want status 2", err)
		}
		if s := stderr.String(); strings.Count(s, "\n") != 1 || !strings.Contains(s, "--gen-ticket-key") {
			t.Fatalf("stderr %q: want one line saying how to make a key", s)
		}
	})

	t.Run("serve", func(t *testing.T) {
		dir := t.TempDir()
		keyFile := filepath.Join(dir, "ticket.keys")
		line, err := exec.Command(bin, "--gen-ticket-key", "--ticket-key-id", "4").Output()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, line, 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "--admin", "127.0.0.1:0", "--log-format", "json", "--reuseport", "2")
		cmd.Env = append(cleanEnv(), "KEYMESH_LISTEN=127.0.0.1:0", "KEYMESH_TICKET_KEY_FILE="+keyFile)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		logs := bufio.NewScanner(stderr)
		ready := make(chan map[string]any, 1)
		go func() {
			for logs.Scan() {
				var rec map[string]any
				if json.Unmarshal(logs.Bytes(), &rec) == nil && rec["msg"] == "relay ready" {
					ready <- rec
				}
			}
			io.Copy(io.Discard, stderr)
			exited <- cmd.Wait()
		}()
		var rec map[string]any
		select {
		case rec = <-ready:
		case err := <-exited:
			exited <- err
			t.Fatalf("relay exited before ready: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("relay not ready within 20s")
		}
		udp, err := net.ResolveUDPAddr("udp", rec["udp"].(string))
		if err != nil {
			t.Fatal(err)
		}
		admin := "http://" + rec["admin"].(string)

		forward(t, udp)
		code, body := metricstest.Get(t, admin+"/healthz")
		if code != 200 || strings.TrimSpace(body) != "ok" {
			t.Fatalf("/healthz: %d %q", code, body)
		}
		deadline := time.Now().Add(3 * time.Second)
		for {
			_, body = metricstest.Get(t, admin+"/metrics")
			p := expfmt.NewTextParser(model.UTF8Validation)
			mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			fwd := mfs["keymesh_relay_forwarded_packets_total"]
			binds := mfs["keymesh_relay_binds_total"]
			if fwd != nil && binds != nil && fwd.GetMetric()[0].GetCounter().GetValue() == 1 && binds.GetMetric()[0].GetCounter().GetValue() == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("metrics never showed one bind and one forward")
			}
			time.Sleep(20 * time.Millisecond)
		}

		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			exited <- err
			if err != nil {
				t.Fatalf("exit after SIGTERM: %v, want status 0", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("relay did not stop on SIGTERM")
		}
	})
}

// forward binds a fresh peer to the relay and sends it one packet through
// the relay from another.
func forward(t *testing.T, relayAddr *net.UDPAddr) {
	t.Helper()
	a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bid, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bound, err := relayclient.Bind(ctx, b, relayAddr, bid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteTo(wire.AppendRelaySend(nil, bound.Ticket, 77, []byte("ping")), relayAddr); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := b.ReadFrom(buf)
	if err != nil {
		t.Fatalf("nothing forwarded: %v", err)
	}
	if tag, p, err := wire.ParseData(buf[:n]); err != nil || tag != 77 || string(p) != "ping" {
		t.Fatalf("forwarded %q tag %d: %v", p, tag, err)
	}
}

// cleanEnv is bintest.CleanEnv.
func cleanEnv() []string { return bintest.CleanEnv() }
