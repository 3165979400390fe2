package meter

import "math/bits"

// Word-at-a-time byte tests: 8 bytes of input are looked at in one
// uint64 (little-endian, so byte k is bits 8k..8k+7). Each test sets the
// high bit of the bytes it matches; the lowest bit set always marks a
// true match (borrows can only add false ones above it), so
// firstMarked finds the first matching byte.

const onesWord, highsWord = 0x0101010101010101, 0x8080808080808080

// bytesBelow marks the bytes of w lower than n (n <= 0x80).
func bytesBelow(w uint64, n byte) uint64 { return (w - onesWord*uint64(n)) &^ w & highsWord }

// bytesEqual marks the bytes of w equal to c.
func bytesEqual(w uint64, c byte) uint64 { return bytesBelow(w^onesWord*uint64(c), 1) }

// firstMarked is the index of the first byte a non-zero mark marks.
func firstMarked(m uint64) int { return bits.TrailingZeros64(m) / 8 }
