package caddymodule_test

import "syscall"

// stripeMockProcAttr makes the kernel kill stripe-mock when the test binary
// dies (panic, timeout), so none outlives its tests.
func stripeMockProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
