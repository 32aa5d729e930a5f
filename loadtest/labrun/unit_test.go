package labrun

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/loadtest/matrix"
)

func TestParsePingLine(t *testing.T) {
	r, err := ParsePingLine([]byte(`{"seq":3,"peer":"abc","overlay":"fd00::1","path":"direct","remote":"100.64.1.2:4000","rtt_ms":1.25}`))
	if err != nil || r.Seq != 3 || r.Path != "direct" || r.Remote != "100.64.1.2:4000" || r.RTTms != 1.25 || !r.OK() {
		t.Fatalf("got %+v, %v", r, err)
	}
	r, err = ParsePingLine([]byte(`{"seq":1,"peer":"abc","error":"no reply within 5s"}`))
	if err != nil || r.OK() || r.Error == "" {
		t.Fatalf("error line: got %+v, %v", r, err)
	}
	for _, bad := range []string{``, `pong from x`, `{"seq":0,"path":"relay"}`, `{"seq":2,"peer":"x"}`, `{"seq":"x"}`} {
		if _, err := ParsePingLine([]byte(bad)); err == nil {
			t.Errorf("ParsePingLine(%q) accepted", bad)
		}
	}
}

func TestClassify(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	cases := []struct {
		name       string
		in         []PingReply
		out        matrix.Outcome
		first, dir time.Duration
	}{
		{"nothing", nil, matrix.None, 0, 0},
		{"only errors", []PingReply{{Seq: 1, Error: "timeout", At: ms(5000)}}, matrix.None, 0, 0},
		{"relay", []PingReply{{Seq: 1, Error: "x", At: ms(10)}, {Seq: 2, Path: "relay", At: ms(40)}, {Seq: 3, Path: "relay", At: ms(90)}}, matrix.Relay, ms(40), 0},
		{"upgrade", []PingReply{{Seq: 1, Path: "relay", At: ms(30)}, {Seq: 2, Path: "direct", At: ms(200)}, {Seq: 3, Path: "relay", At: ms(300)}}, matrix.Direct, ms(30), ms(200)},
		{"direct first", []PingReply{{Seq: 1, Path: "direct", At: ms(25)}}, matrix.Direct, ms(25), ms(25)},
	}
	for _, c := range cases {
		out, first, dir := Classify(c.in)
		if out != c.out || first != c.first || dir != c.dir {
			t.Errorf("%s: got %s %v %v, want %s %v %v", c.name, out, first, dir, c.out, c.first, c.dir)
		}
	}
}

func TestMatrixPairs(t *testing.T) {
	all := MatrixPairs(natlab.AllTypes())
	if len(all) != 37 {
		t.Fatalf("%d pairs for all types, want 36 + same-nat", len(all))
	}
	if all[36] != (Pair{natlab.SameNAT, natlab.SameNAT}) {
		t.Fatalf("last pair %v, want same-nat", all[36])
	}
	for _, p := range all[:36] {
		if p.A == natlab.SameNAT || p.B == natlab.SameNAT {
			t.Fatalf("same-nat paired with another type: %v", p)
		}
	}
	got := MatrixPairs([]natlab.NATType{natlab.Symmetric, natlab.Public})
	want := []Pair{{natlab.Symmetric, natlab.Symmetric}, {natlab.Symmetric, natlab.Public}, {natlab.Public, natlab.Symmetric}, {natlab.Public, natlab.Public}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := MatrixPairs([]natlab.NATType{natlab.SameNAT}); len(got) != 1 {
		t.Fatalf("same-nat alone: %v", got)
	}
}

func TestParseTypes(t *testing.T) {
	for _, s := range []string{"", "all"} {
		got, err := ParseTypes(s)
		if err != nil || len(got) != len(natlab.AllTypes()) {
			t.Fatalf("ParseTypes(%q) = %v, %v", s, got, err)
		}
	}
	got, err := ParseTypes(" Symmetric,public,,symmetric ")
	if err != nil || !slices.Equal(got, []natlab.NATType{natlab.Symmetric, natlab.Public}) {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := ParseTypes("public,carrier"); err == nil || !strings.Contains(err.Error(), "carrier") {
		t.Fatalf("unknown type accepted: %v", err)
	}
	if _, err := ParseTypes(",,"); err == nil {
		t.Fatal("empty list accepted")
	}
}

func TestLineWriter(t *testing.T) {
	var lines []string
	var copyTo strings.Builder
	lw := &lineWriter{w: &copyTo, fn: func(s string) { lines = append(lines, s) }}
	for _, chunk := range []string{"a", "b\nc\r\n", "", "d\ne"} {
		if _, err := lw.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(lines, []string{"ab", "c", "d"}) || copyTo.String() != "ab\nc\r\nd\ne" {
		t.Fatalf("lines %q, copy %q", lines, copyTo.String())
	}
}

func TestTailFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(p, []byte("1\n2\n3\n4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := tailFile(p, 2); got != "... (2 lines before)\n3\n4" {
		t.Fatalf("tail %q", got)
	}
	if got := tailFile(p, 10); got != "1\n2\n3\n4" {
		t.Fatalf("tail %q", got)
	}
	if got := tailFile(filepath.Join(t.TempDir(), "none"), 2); !strings.Contains(got, "cannot read") {
		t.Fatalf("tail of a missing file: %q", got)
	}
}

// TestProcStop checks that Stop ends a process that ignores nothing with
// SIGTERM, one that ignores SIGTERM with SIGKILL, and that the log holds
// its output and how it ended.
func TestProcStop(t *testing.T) {
	dir := t.TempDir()
	p, err := startProc(exec.CommandContext(context.Background(), "sh", "-c", "echo hello; echo oops >&2; exec sleep 30"), "sleeper", filepath.Join(dir, "a.log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if !p.Running() {
		t.Fatal("not running")
	}
	start := time.Now()
	p.Stop()
	if time.Since(start) > 2*time.Second || p.Running() || p.Err() == nil {
		t.Fatalf("stop took %s, running %v, err %v", time.Since(start), p.Running(), p.Err())
	}
	log := p.Tail(10)
	for _, want := range []string{"hello", "oops", "sleeper ended"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	p.Stop() // again: harmless

	stubborn, err := startProc(exec.CommandContext(context.Background(), "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"), "stubborn", filepath.Join(dir, "b.log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	start = time.Now()
	stubborn.Stop()
	if d := time.Since(start); d < stopGrace-500*time.Millisecond || d > stopGrace+3*time.Second {
		t.Fatalf("stubborn process stopped after %s, want about %s", d, stopGrace)
	}
}

// TestProcContext checks that cancelling the context a process was made
// with ends it (SIGTERM first), as SIGINT of the loadtest command does.
func TestProcContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p, err := startProc(exec.CommandContext(ctx, "sleep", "30"), "sleep", filepath.Join(t.TempDir(), "c.log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-p.Done():
	case <-time.After(3 * time.Second):
		p.Kill()
		t.Fatal("cancelling the context did not end the process")
	}
}

func TestSumMetric(t *testing.T) {
	text := `# HELP keymesh_relay_forwarded_bytes_total x
# TYPE keymesh_relay_forwarded_bytes_total counter
keymesh_relay_forwarded_bytes_total{socket="0"} 1000
keymesh_relay_forwarded_bytes_total{socket="1",x="a b"} 2.5e3
keymesh_relay_forwarded_bytes_total_extra 7
keymesh_relay_binds_total 3
`
	if got := sumMetric(text, "keymesh_relay_forwarded_bytes_total"); got != 3500 {
		t.Fatalf("sum %v, want 3500", got)
	}
	if got := sumMetric(text, "keymesh_relay_binds_total"); got != 3 {
		t.Fatalf("sum %v, want 3", got)
	}
	if got := sumMetric(text, "nothing"); got != 0 {
		t.Fatalf("sum %v, want 0", got)
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine("a  b\n\n   c\td\n", 100); got != "a b | c d" {
		t.Fatalf("got %q", got)
	}
	if got := oneLine(strings.Repeat("x", 50), 10); got != "xxxxxxx..." {
		t.Fatalf("got %q", got)
	}
}

func TestReached(t *testing.T) {
	relay := PingReply{Seq: 1, Path: "relay"}
	direct := PingReply{Seq: 2, Path: "direct"}
	failed := PingReply{Seq: 3, Error: "timeout"}
	for _, c := range []struct {
		r    PingReply
		want matrix.Outcome
		ok   bool
	}{
		{relay, matrix.Direct, false}, {direct, matrix.Direct, true},
		{relay, matrix.Relay, true}, {direct, matrix.Relay, true},
		{failed, matrix.Relay, false},
	} {
		if got := reached(c.r, c.want); got != c.ok {
			t.Errorf("reached(%+v, %s) = %v", c.r, c.want, got)
		}
	}
}
