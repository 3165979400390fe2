package main

import "syscall"

// sysProcAttr makes the kernel kill a child (caddy, the mock upstream) when
// the harness dies, so no process outlives an interrupted run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
