package peercmd

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/daemon/daemontest"
	"github.com/keymesh/keymesh/internal/testutil/localuser"
)

// otherTCP is the other user's client (TestMain runs it): one exchange
// through a forward, printing "ok" or "refused: ...".
func otherTCP(addr string) int {
	if err := tcpExchange(addr); err != nil {
		fmt.Println("refused:", err)
	} else {
		fmt.Println("ok")
	}
	return 0
}

// tcpExchange sends "tcp" through a forward and wants an answer.
func tcpExchange(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("tcp"))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || len(got) == 0 {
		return fmt.Errorf("got %q, %v", got, err)
	}
	return nil
}

// asOtherUser runs this test binary as a throwaway system user (made here,
// removed at cleanup) in mode with arg, and returns what it printed.
func asOtherUser(t *testing.T, mode, arg string) string {
	t.Helper()
	u := localuser.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := u.Command(ctx, "KEYMESH_OTHER_MODE="+mode, "KEYMESH_OTHER_ARG="+arg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as the other user: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestForwardRefusesOtherUsers is issue 10's item 9 for `peer forward`: a
// connection to the forward's loopback port from another local user (a
// real one) is refused; the user who runs the forward gets through.
func TestForwardRefusesOtherUsers(t *testing.T) {
	n, _, sock := fakeDaemon(t)
	b := newID(t).String()
	n.Remote(b, daemontest.UpperAfterEOF)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- Main(ctx, []string{"forward", "--socket", sock, "0", b + ":8080"}, nil, &out, &errb) }()
	defer func() {
		cancel()
		<-done
	}()
	line := waitLine(t, &out, "forwarding 127.0.0.1:", 5*time.Second)
	addr := strings.Fields(line)[1]
	if err := tcpExchange(addr); err != nil {
		t.Fatalf("the forward's own user: %v", err)
	}
	if got := asOtherUser(t, "tcp", addr); !strings.HasPrefix(got, "refused") {
		t.Errorf("another user went through the forward with this peer's key: %s", got)
	}
}
