package coturn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Report is what turnutils_uclient prints at the end of a run.
type Report struct {
	Sent, Received int64 // messages sent through the relay, and echoed back
	Lost           int64 // Sent - Received, as uclient counts it
	LossPercent    float64
	SendDropped    int64   // sends that failed locally
	TransmitSecs   int     // "Total transmit time" (whole seconds)
	AvgRTTms       float64 // average round trip
	Progress       []Progress
}

// Progress is one of uclient's once-a-second lines: cumulative counts at
// Second seconds after it started.
type Progress struct {
	Second         int
	Sent, Received int64
}

// ErrNoReport: the output holds no final report (uclient failed or was cut).
var ErrNoReport = errors.New("coturn: no turnutils_uclient report in output")

// ParseProgress parses one uclient output line of the form
// "12: : start_mclient: msz=4, tot_send_msgs=248, tot_recv_msgs=246, ...".
func ParseProgress(line string) (Progress, bool) {
	sec, rest, ok := strings.Cut(line, ":")
	if !ok || !strings.Contains(rest, "msz=") {
		return Progress{}, false
	}
	s, err := strconv.Atoi(strings.TrimSpace(sec))
	if err != nil {
		return Progress{}, false
	}
	sent, ok1 := intAfter(rest, "tot_send_msgs=")
	recv, ok2 := intAfter(rest, "tot_recv_msgs=")
	if !ok1 || !ok2 {
		return Progress{}, false
	}
	return Progress{Second: s, Sent: sent, Received: recv}, true
}

// ParseTotals parses uclient's final count line,
// "16: : start_mclient: tot_send_msgs=3000, tot_recv_msgs=2998".
func ParseTotals(line string) (sent, received int64, ok bool) {
	if !strings.Contains(line, "start_mclient: tot_send_msgs=") {
		return 0, 0, false
	}
	s, ok1 := intAfter(line, "tot_send_msgs=")
	r, ok2 := intAfter(line, "tot_recv_msgs=")
	return s, r, ok1 && ok2
}

// ParseReport parses uclient's output. It needs the final
// "tot_send_msgs=..., tot_recv_msgs=..." and "Total lost packets" lines.
func ParseReport(out []byte) (Report, error) {
	var (
		r                 Report
		haveTotals, haveL bool
	)
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := ParseProgress(line); ok {
			r.Progress = append(r.Progress, p)
			continue
		}
		switch {
		case strings.Contains(line, "start_mclient: tot_send_msgs="):
			if s, v, ok := ParseTotals(line); ok {
				r.Sent, r.Received, haveTotals = s, v, true
			}
		case strings.Contains(line, "Total transmit time is "):
			if v, ok := intAfter(line, "Total transmit time is "); ok {
				r.TransmitSecs = int(v)
			}
		case strings.Contains(line, "Total lost packets "):
			// The percentage is "-nan" when nothing was sent.
			lost, ok1 := intAfter(line, "Total lost packets ")
			drop, ok2 := intAfter(line, "total send dropped ")
			if ok1 && ok2 {
				r.Lost, r.SendDropped, haveL = lost, drop, true
				r.LossPercent, _ = floatAfter(line, "(")
			}
		case strings.Contains(line, "Average round trip delay "):
			if v, ok := floatAfter(line, "Average round trip delay "); ok {
				r.AvgRTTms = v
			}
		}
	}
	if !haveTotals || !haveL {
		return r, ErrNoReport
	}
	if r.Sent < 0 || r.Received < 0 || r.Lost < 0 || r.Received > r.Sent {
		return r, fmt.Errorf("coturn: inconsistent uclient report: sent %d, received %d, lost %d", r.Sent, r.Received, r.Lost)
	}
	return r, nil
}

// intAfter parses the decimal integer that follows key in s.
func intAfter(s, key string) (int64, bool) {
	i := strings.Index(s, key)
	if i < 0 {
		return 0, false
	}
	s = s[i+len(key):]
	j := 0
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	if j == 0 || j > 18 {
		return 0, false
	}
	v, err := strconv.ParseInt(s[:j], 10, 64)
	return v, err == nil
}

// floatAfter parses the decimal number that follows key in s.
func floatAfter(s, key string) (float64, bool) {
	i := strings.Index(s, key)
	if i < 0 {
		return 0, false
	}
	s = s[i+len(key):]
	j := 0
	for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
		j++
	}
	if j == 0 || j > 40 {
		return 0, false
	}
	v, err := strconv.ParseFloat(s[:j], 64)
	return v, err == nil
}
