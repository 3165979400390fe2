package testredis

import "syscall"

// sysProcAttr makes the kernel kill redis-server when the test binary dies
// (panic, timeout, SIGKILL), so no server outlives its tests. Pdeathsig fires
// when the spawning OS thread exits; Go only ends threads of goroutines that
// exit while locked with runtime.LockOSThread, which test code does not do.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
