package obs

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func startAdmin(t *testing.T, mod func(*Admin)) string {
	t.Helper()
	a := NewAdmin("test", nil)
	if mod != nil {
		mod(a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	addr, err := a.ListenAndServe(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return addr.String()
}

// TestAdminRefusesHugeHeaders: a client cannot make the admin server buffer
// a megabyte of headers (Go's default allows 1 MB).
func TestAdminRefusesHugeHeaders(t *testing.T) {
	addr := startAdmin(t, nil)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 256<<10)+"\r\n\r\n")
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a 256 KiB header: %v", err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d to a 256 KiB header, want 431", resp.StatusCode)
	}
}

// TestAdminClosesIdleAndSilentConnections: connections that send nothing
// or stay idle after a request are closed by the server (the limits are
// shortened here; the test waits for the close, not for a duration).
func TestAdminClosesIdleAndSilentConnections(t *testing.T) {
	addr := startAdmin(t, func(a *Admin) {
		a.limits.readHeader = 200 * time.Millisecond
		a.limits.idle = 200 * time.Millisecond
	})
	silent, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	idle, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	_ = idle.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	for name, r := range map[string]io.Reader{"silent": silent, "idle": br} {
		if c, ok := r.(net.Conn); ok {
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			t.Errorf("%s connection: %v, want closed by the server", name, err)
		}
	}
}
