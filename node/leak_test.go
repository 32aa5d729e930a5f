package node

import (
	"io"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestCloseLeavesNoGoroutines checks that closing nodes ends every
// goroutine of the node, the path layer and quic-go.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	m := startMesh(t)
	a, b := m.newNode(nil), m.newNode(nil)
	go func() {
		c, err := b.Listen().Accept()
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	c, err := a.Dial(tctx(t, 10*time.Second), b.ID())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	io.ReadFull(c, make([]byte, 4))
	a.Close()
	b.Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var left []string
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "TestCloseLeavesNoGoroutines") || strings.Contains(g, "relay.(*Server)") ||
				strings.Contains(g, "rendezvous.(*Server)") {
				continue
			}
			if strings.Contains(g, "keymesh/keymesh/node.") || strings.Contains(g, "keymesh/internal/pathsock.") ||
				strings.Contains(g, "keymesh/internal/rzclient.") || strings.Contains(g, "quic-go/quic-go.") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after Close:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
