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
	var set unix.CPUSet
	set.Set(core)
	return pinSet(pid, &set)
}

// pinSet sets the CPU affinity of every thread of process pid to set.
func pinSet(pid int, set *unix.CPUSet) error {
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		return fmt.Errorf("pin %d: %w", pid, err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		// A thread may end between listing and pinning.
		if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("pin thread %d of %d: %w", tid, pid, err)
		}
	}
	return nil
}

// pinSelf pins this process to core and returns a function that gives it
// back the affinity it had.
func pinSelf(core int) (restore func(), err error) {
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return func() {}, fmt.Errorf("affinity: %w", err)
	}
	if err := pin(os.Getpid(), core); err != nil {
		return func() {}, err
	}
	return func() { _ = pinSet(os.Getpid(), &old) }, nil
}
