package peers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keymesh/keymesh/internal/discovery"
)

// spawned is a rendezvous binary the bench started (--rendezvous): the real
// server, in its own process, measured through its admin endpoint.
type spawned struct {
	cmd     *exec.Cmd
	dir     string
	connect string
	admin   string
	done    chan struct{}
	mu      sync.Mutex
	tail    []string
}

// spawnRendezvous starts bin on a loopback address with its admin endpoint
// on another, its key in keyFile (made when missing; "": a new one), the
// scenario's registry and the extra args, and waits for its
// connect string and admin address.
func spawnRendezvous(ctx context.Context, bin, keyFile, registry, redisURL string, extra []string) (*spawned, error) {
	dir, err := os.MkdirTemp("", "loadtest-rendezvous-")
	if err != nil {
		return nil, err
	}
	if keyFile == "" {
		keyFile = filepath.Join(dir, "rendezvous.key")
	}
	args := []string{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--key", keyFile,
		"--registry", registry, "--log-level", "warn"}
	if registry == "redis" {
		args = append(args, "--redis", redisURL)
	}
	args = append(args, extra...)
	s := &spawned{dir: dir, done: make(chan struct{})}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = append(os.Environ(), "GOTRACEBACK=single")
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("--rendezvous %s: %w", bin, err)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := sc.Text()
			s.mu.Lock()
			s.tail = append(s.tail, l)
			if len(s.tail) > 20 {
				s.tail = s.tail[1:]
			}
			s.mu.Unlock()
			select {
			case lines <- l:
			default:
			}
		}
		_ = s.cmd.Wait()
		close(s.done)
	}()
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	for s.connect == "" || s.admin == "" {
		select {
		case l := <-lines:
			if v, ok := strings.CutPrefix(l, "connect string: "); ok {
				s.connect = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(l, "admin: "); ok {
				s.admin = strings.TrimSpace(v)
			}
		case <-s.done:
			s.stop()
			return nil, fmt.Errorf("--rendezvous %s %s exited:\n%s", bin, strings.Join(args, " "), s.lastLines())
		case <-timer.C:
			s.stop()
			return nil, fmt.Errorf("--rendezvous %s printed no connect string and admin address within 20 s:\n%s", bin, s.lastLines())
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		}
	}
	return s, nil
}

func (s *spawned) lastLines() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.tail, "\n")
}

// stop ends the server (SIGTERM, SIGKILL after 10 s) and removes its
// directory.
func (s *spawned) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	os.RemoveAll(s.dir)
}

// spawnedBench runs peersBench against a freshly spawned server of o's
// registry, as an external server with its admin endpoint.
func spawnedBench(ctx context.Context, o peersOpts, progress io.Writer) (*peersResult, error) {
	if o.instances > 1 {
		return nil, errors.New("--rendezvous starts one instance per scenario")
	}
	s, err := spawnRendezvous(ctx, o.spawn, o.keyFile, o.registry, o.redisURL, o.spawnArgs)
	if err != nil {
		return nil, err
	}
	defer s.stop()
	fmt.Fprintf(progress, "started %s (%s registry): %s\n", o.spawn, o.registry, s.connect)
	var rc redis.UniversalClient
	if o.registry == "redis" {
		opts, err := discovery.ParseRedisURL(o.redisURL)
		if err != nil {
			return nil, err
		}
		rc = redis.NewUniversalClient(opts)
		defer rc.Close()
	}
	redis0 := redisUsedMemory(ctx, rc)
	so := o
	so.servers, so.admins = []string{s.connect}, []string{s.admin}
	res, err := peersBench(ctx, so, progress)
	if err != nil {
		return nil, fmt.Errorf("%w\nrendezvous output:\n%s", err, s.lastLines())
	}
	res.spawned = true
	if r1 := redisUsedMemory(ctx, rc); redis0 >= 0 && r1 >= 0 {
		res.redisPerPeer = float64(r1-redis0) / float64(o.count-res.regMissed)
	}
	return res, nil
}
