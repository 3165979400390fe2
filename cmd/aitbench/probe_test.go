package main

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// procFaults counts the page faults of a process: touching 1,024 fresh
// pages of this one adds at least as many; and procCPU, from the same
// line, agrees with getrusage.
func TestProcFaults(t *testing.T) {
	const pages = 1024
	size := pages * os.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	// One fault per page, even where huge pages are on for every mapping.
	if err := syscall.Madvise(mem, 15 /* MADV_NOHUGEPAGE */); err != nil {
		t.Fatal(err)
	}
	before, err := procFaults(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < size; i += os.Getpagesize() {
		mem[i] = 1
	}
	after, err := procFaults(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < pages {
		t.Fatalf("%d page faults for %d fresh pages", after-before, pages)
	}
	// The CPU time read from the same line is the process's own, as
	// getrusage counts it (to the clock tick).
	self := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for x := 0; self() < 60*time.Millisecond; x++ {
		mem[x%size]++
	}
	cpu, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	rusage := self()
	if cpu > rusage+20*time.Millisecond || cpu < rusage-20*time.Millisecond {
		t.Fatalf("procCPU %v, getrusage %v", cpu, rusage)
	}
}
