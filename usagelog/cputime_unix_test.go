//go:build unix

package usagelog

import (
	"syscall"
	"time"
)

// cpuTime returns the CPU time (user and system) this process has used,
// for benchmarks to report CPU per row on a machine shared with others.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
