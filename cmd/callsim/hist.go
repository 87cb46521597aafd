package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram is a log-linear histogram of durations in nanoseconds, safe for
// concurrent use without locks: every reader goroutine of the load adds to
// the same one. Values below 64 ns have their own bucket; above, each power
// of two is split into 32 buckets, so a percentile is within about 3% of
// the true value. It covers up to 2^45 ns (about 9.7 hours).
type histogram struct {
	counts [histBuckets]atomic.Int64
	n      atomic.Int64
	max    atomic.Int64
}

const (
	histLinear  = 64 // values 0..63 have a bucket each
	histSub     = 32 // buckets per power of two above that
	histMaxBits = 45
	histBuckets = histLinear + (histMaxBits-6)*histSub
)

func histIndex(v int64) int {
	if v < histLinear {
		return int(max(v, 0))
	}
	l := bits.Len64(uint64(v))
	if l > histMaxBits {
		return histBuckets - 1
	}
	shift := l - 6 // v>>shift is in [32, 64)
	return histLinear + (shift-1)*histSub + int(v>>shift) - histSub
}

// histUpper returns the largest value that falls in bucket i.
func histUpper(i int) int64 {
	if i < histLinear {
		return int64(i)
	}
	j := i - histLinear
	shift := j/histSub + 1
	m := int64(j%histSub + histSub)
	return (m+1)<<shift - 1
}

// add records one duration in nanoseconds.
func (h *histogram) add(ns int64) {
	h.counts[histIndex(ns)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if ns <= m || h.max.CompareAndSwap(m, ns) {
			return
		}
	}
}

// quantile returns the upper bound of the bucket holding the q-quantile
// (0 < q <= 1), capped at the exact maximum; 0 when empty.
func (h *histogram) quantile(q float64) int64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := int64(q*float64(n) + 0.5)
	rank = min(max(rank, 1), n)
	var seen int64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return min(histUpper(i), h.max.Load())
		}
	}
	return h.max.Load()
}

// Latency is the summary of one histogram, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50Ms"`
	P90   float64 `json:"p90Ms"`
	P99   float64 `json:"p99Ms"`
	Max   float64 `json:"maxMs"`
}

func (h *histogram) summary() Latency {
	ms := func(ns int64) float64 { return float64(ns) / float64(time.Millisecond) }
	return Latency{
		Count: h.n.Load(),
		P50:   ms(h.quantile(0.50)),
		P90:   ms(h.quantile(0.90)),
		P99:   ms(h.quantile(0.99)),
		Max:   ms(h.max.Load()),
	}
}
