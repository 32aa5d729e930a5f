package relaybench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// derperProc is Tailscale's derper over TLS (a self-signed certificate for
// 127.0.0.1, as derper makes one for an IP hostname in manual cert mode),
// without STUN or the plain-HTTP port.
type derperProc struct {
	bin, gen string
	c        *child
	addr     netip.AddrPort
	cleanup  func()
}

func (d *derperProc) name() string { return "derper" }

func (d *derperProc) start(ctx context.Context) error {
	dir, cleanup, err := tempDir()
	if err != nil {
		return err
	}
	d.cleanup = cleanup
	port, err := freePort()
	if err != nil {
		return err
	}
	d.addr = netip.AddrPortFrom(loopback, port)
	d.c, err = startChild(ctx, d.bin, "-a", d.addr.String(), "-http-port", "-1", "-stun=false",
		"-certmode", "manual", "-certdir", dir, "-hostname", loopback.String(),
		"-c", filepath.Join(dir, "derper.json"))
	if err != nil {
		return err
	}
	return waitTCP(ctx, d.c, d.addr)
}

func (d *derperProc) pid() int { return d.c.pid() }

func (d *derperProc) stop() {
	if d.c != nil {
		d.c.stop()
	}
	if d.cleanup != nil {
		d.cleanup()
	}
}

// derpFlows drives derpgen: it connects the clients, then runs one step
// per line it is sent.
type derpFlows struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	errb *capBuf
}

func (d *derperProc) open(ctx context.Context, n int, o Options) (flowSet, error) {
	cmd := exec.CommandContext(ctx, d.gen, "-addr", d.addr.String(), "-flows", strconv.Itoa(n),
		"-receivers", strconv.Itoa(o.Receivers), "-size", strconv.Itoa(o.Size))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	f := &derpFlows{cmd: cmd, errb: &capBuf{}}
	cmd.Stderr = f.errb
	var err error
	if f.in, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start derpgen: %w", err)
	}
	f.out = bufio.NewScanner(stdout)
	f.out.Buffer(make([]byte, 1<<20), 1<<20)
	var ready struct{ Ready bool }
	if err := f.read(&ready); err != nil || !ready.Ready {
		f.close()
		return nil, fmt.Errorf("derpgen did not connect %d flows: %v", n, err)
	}
	return f, nil
}

func (f *derpFlows) read(v any) error {
	if !f.out.Scan() {
		return fmt.Errorf("derpgen ended: %v; stderr: %s", f.out.Err(), tail(f.errb.String(), 1500))
	}
	return json.Unmarshal(f.out.Bytes(), v)
}

func (f *derpFlows) step(ctx context.Context, rate float64, d time.Duration) (stepResult, error) {
	if _, err := fmt.Fprintf(f.in, "step %.0f %s\n", rate, d); err != nil {
		return stepResult{}, fmt.Errorf("derpgen: %w; stderr: %s", err, tail(f.errb.String(), 1500))
	}
	var r struct {
		Target, Sent, Received uint64
		ElapsedNS              int64 `json:"elapsed_ns"`
		Hist                   []uint64
	}
	if err := f.read(&r); err != nil {
		return stepResult{}, err
	}
	if len(r.Hist) != histBuckets {
		return stepResult{}, fmt.Errorf("derpgen: histogram of %d buckets, want %d", len(r.Hist), histBuckets)
	}
	return stepResult{target: r.Target, sent: r.Sent, received: r.Received, elapsed: time.Duration(r.ElapsedNS), lat: r.Hist}, ctx.Err()
}

func (f *derpFlows) close() {
	f.in.Close()
	done := make(chan struct{})
	go func() { f.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		f.cmd.Process.Kill()
		<-done
	}
}
