package relaybench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// pin sets the CPU affinity of every thread of process pid to core. Threads
// made later inherit it from the thread that makes them.
func pin(pid, core int) error {
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		return fmt.Errorf("pin %d: %w", pid, err)
	}
	var set unix.CPUSet
	set.Set(core)
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		// A thread may end between listing and pinning.
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("pin thread %d of %d to core %d: %w", tid, pid, core, err)
		}
	}
	return nil
}
