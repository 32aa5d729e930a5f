package peercli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to make a second user, and CI=true")
		}
		t.Skip("needs root: makes a second user")
	}
	var b [3]byte
	rand.Read(b[:])
	name := "kmt" + hex.EncodeToString(b[:])
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "kmbin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "other.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = "/"
	cmd.Env = []string{"KEYMESH_OTHER_MODE=" + mode, "KEYMESH_OTHER_ARG=" + arg, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
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
	n.Remote(b, upperAfterEOF)
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
