package redistest

import "syscall"

// childAttr makes the kernel kill the server when the test binary dies
// without running its cleanups (a panic, a test timeout).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
