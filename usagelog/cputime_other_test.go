//go:build !unix

package usagelog

import "time"

// cpuTime is 0 where getrusage is missing: the benchmarks then report no
// CPU per row.
func cpuTime() time.Duration { return 0 }
