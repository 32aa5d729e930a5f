package throughput

import (
	"syscall"
	"time"
)

// tpCPUTime is the process's user plus system CPU time so far.
func tpCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
