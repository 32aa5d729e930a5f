package relaybench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// coreTimes are one core's busy and total jiffies from /proc/stat.
type coreTimes struct{ busy, total uint64 }

// readCore reads core's line of /proc/stat: everything but idle and
// iowait counts as busy, whoever ran (the machine may be shared).
func readCore(core int) (coreTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return coreTimes{}, err
	}
	defer f.Close()
	want := "cpu" + strconv.Itoa(core)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[0] != want {
			continue
		}
		var t coreTimes
		for i, v := range fields[1:] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return coreTimes{}, fmt.Errorf("/proc/stat %s: %w", want, err)
			}
			t.total += n
			if i != 3 && i != 4 { // idle, iowait
				t.busy += n
			}
		}
		return t, nil
	}
	return coreTimes{}, fmt.Errorf("/proc/stat has no %s", want)
}

// busyBetween is the share of the core busy from a to b, 0 if unknown.
func busyBetween(a, b coreTimes) float64 {
	if b.total <= a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total)
}
