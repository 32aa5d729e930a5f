package coturn

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// uclientOutput is turnutils_uclient 4.6.1's output from a real run
// (-m 4 -n 200 -l 500 -z 5 -c), trimmed.
const uclientOutput = `0: : Total connect time is 1
0: : start_mclient: msz=4, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
2: : start_mclient: msz=4, tot_send_msgs=248, tot_recv_msgs=246, tot_send_bytes ~ 124000, tot_recv_bytes ~ 123000
3: : start_mclient: msz=4, tot_send_msgs=496, tot_recv_msgs=495, tot_send_bytes ~ 248000, tot_recv_bytes ~ 247500
5: : start_mclient: tot_send_msgs=800, tot_recv_msgs=798
5: : start_mclient: tot_send_bytes ~ 400000, tot_recv_bytes ~ 399000
5: : Total transmit time is 5
5: : Total lost packets 2 (0.250000%), total send dropped 0 (0.000000%)
5: : Average round trip delay 0.051250 ms; min = 0 ms, max = 9 ms
5: : Average jitter 1.558750 ms; min = 0 ms, max = 12 ms
`

func TestParseReport(t *testing.T) {
	r, err := ParseReport([]byte(uclientOutput))
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 800 || r.Received != 798 || r.Lost != 2 || r.LossPercent != 0.25 ||
		r.SendDropped != 0 || r.TransmitSecs != 5 || r.AvgRTTms != 0.05125 {
		t.Fatalf("report %+v", r)
	}
	want := []Progress{{0, 0, 0}, {2, 248, 246}, {3, 496, 495}}
	if len(r.Progress) != len(want) {
		t.Fatalf("progress %+v, want %+v", r.Progress, want)
	}
	for i := range want {
		if r.Progress[i] != want[i] {
			t.Fatalf("progress[%d] = %+v, want %+v", i, r.Progress[i], want[i])
		}
	}
}

func TestParseTotals(t *testing.T) {
	if s, r, ok := ParseTotals("16: : start_mclient: tot_send_msgs=3000, tot_recv_msgs=2998"); !ok || s != 3000 || r != 2998 {
		t.Fatalf("%d %d %v", s, r, ok)
	}
	if _, _, ok := ParseTotals("2: : start_mclient: msz=4, tot_send_msgs=248, tot_recv_msgs=246"); ok {
		t.Fatal("progress line taken for totals")
	}
}

func TestParseReportNaN(t *testing.T) {
	out := "1: : start_mclient: tot_send_msgs=0, tot_recv_msgs=0\n1: : Total lost packets 0 (-nan%), total send dropped 0 (-nan%)\n"
	r, err := ParseReport([]byte(out))
	if err != nil || r.Sent != 0 || r.Lost != 0 {
		t.Fatalf("%+v, %v", r, err)
	}
}

func TestParseReportIncomplete(t *testing.T) {
	cut := uclientOutput[:strings.Index(uclientOutput, "5: : Total lost")]
	if _, err := ParseReport([]byte(cut)); !errors.Is(err, ErrNoReport) {
		t.Fatalf("cut output: err = %v, want ErrNoReport", err)
	}
	bad := "1: : start_mclient: tot_send_msgs=1, tot_recv_msgs=5\n1: : Total lost packets 0 (0%), total send dropped 0 (0%)\n"
	if _, err := ParseReport([]byte(bad)); err == nil {
		t.Fatal("received > sent accepted")
	}
}

func FuzzParseReport(f *testing.F) {
	f.Add([]byte(uclientOutput))
	f.Add([]byte("1: : Total lost packets 99999999999999999999 (1e400%), total send dropped 1 (x%)"))
	f.Add([]byte("x: msz= tot_send_msgs=-1, tot_recv_msgs=2"))
	f.Fuzz(func(t *testing.T, out []byte) {
		r, err := ParseReport(out)
		if err != nil {
			return
		}
		if r.Sent < 0 || r.Received < 0 || r.Received > r.Sent || r.Lost < 0 {
			t.Fatalf("inconsistent report accepted: %+v", r)
		}
	})
}

func TestParseStatCPU(t *testing.T) {
	// Fields after the command: state ppid pgrp session tty tpgid flags
	// minflt cminflt majflt cmajflt utime stime ...
	stat := "4242 (turn server) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 3 0"
	d, err := parseStatCPU(stat)
	if err != nil || d != 3800*time.Millisecond {
		t.Fatalf("cpu = %v, %v; want 3.8s", d, err)
	}
	if _, err := parseStatCPU("garbage"); !errors.Is(err, ErrProcStat) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestClientArgs(t *testing.T) {
	cfg := ClientConfig{User: "u"}
	if _, err := cfg.Args(); err == nil {
		t.Fatal("config without server accepted")
	}
}
