package childproc

import "syscall"

// SysProcAttr makes the kernel kill the child when its parent (the test
// binary, the bench harness) dies (panic, timeout, SIGKILL), so no child
// outlives it. Pdeathsig fires when the spawning OS thread exits; Go only
// ends threads of goroutines that exit while locked with
// runtime.LockOSThread, which the callers do not do.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
