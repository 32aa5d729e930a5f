package node

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// lockedBuffer is a log sink that goroutines share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStreamToDisallowedPortRefused: b allows a only port 7. A stream from
// a to port 8, where b does listen, is reset with codeRefused before the
// listener sees it, and b logs and counts the refusal.
func TestStreamToDisallowedPortRefused(t *testing.T) {
	m := startMesh(t)
	a := m.newNode(nil)
	var logs lockedBuffer
	b := m.newNode(func(c *Config) {
		c.AllowAny = false
		c.Allow = []string{a.ID() + ":7"}
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	l7, err := b.ListenPort(7)
	if err != nil {
		t.Fatal(err)
	}
	l8, err := b.ListenPort(8)
	if err != nil {
		t.Fatal(err)
	}
	reached8 := make(chan struct{}, 1)
	go func() {
		if c, err := l8.Accept(); err == nil {
			reached8 <- struct{}{}
			c.Close()
		}
	}()
	go func() {
		if c, err := l7.Accept(); err == nil {
			c.Write([]byte("seven"))
			c.Close()
		}
	}()

	c, err := a.DialPort(tctx(t, 10*time.Second), b.ID(), 7)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(c); err != nil || string(got) != "seven" {
		t.Fatalf("allowed port 7: %q, %v", got, err)
	}

	c, err = a.DialPort(tctx(t, 10*time.Second), b.ID(), 8)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != codeRefused {
		t.Fatalf("read from a refused port: %v, want a stream reset with code %d", err, codeRefused)
	}
	select {
	case <-reached8:
		t.Fatal("the listener on port 8 got a stream the policy refuses")
	default:
	}
	if got := b.Policy().Refused("tcp"); got != 1 {
		t.Errorf("b counted %d refused tcp flows, want 1", got)
	}
	want := "kind=tcp peer=" + a.ID() + " port=8"
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "policy refused a flow") {
			line = l
		}
	}
	if !strings.Contains(line, want) {
		t.Errorf("b logged %q, want a refusal line with %q; log:\n%s", line, want, logs.String())
	}
}
