package router

import (
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds, in seconds, of the latency histograms
// (Prometheus' convention: each bucket counts observations <= its bound).
var LatencyBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

var latencyBucketsNs = func() []int64 {
	ns := make([]int64, len(LatencyBuckets))
	for i, b := range LatencyBuckets {
		ns[i] = int64(b * 1e9)
	}
	return ns
}()

// Histogram counts durations in LatencyBuckets without locks: observing is a few
// atomic adds, cheap enough for every request; reading it is for scrapes.
type Histogram struct {
	counts [17]atomic.Uint64 // per bucket (not cumulative), the last one +Inf
	sumNs  atomic.Int64
}

// Observe adds one duration.
func (h *Histogram) Observe(d time.Duration) {
	n := int64(d)
	i := 0
	for i < len(latencyBucketsNs) && n > latencyBucketsNs[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(n)
}

// ObserveN adds n observations of the same duration.
func (h *Histogram) ObserveN(d time.Duration, n int) {
	if n <= 0 {
		return
	}
	v := int64(d)
	i := 0
	for i < len(latencyBucketsNs) && v > latencyBucketsNs[i] {
		i++
	}
	h.counts[i].Add(uint64(n))
	h.sumNs.Add(v * int64(n))
}

// Snapshot returns the number of observations, their sum in seconds and the
// cumulative count of each bucket of LatencyBuckets.
func (h *Histogram) Snapshot() (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(LatencyBuckets))
	var cum uint64
	for i, b := range LatencyBuckets {
		cum += h.counts[i].Load()
		buckets[b] = cum
	}
	count = cum + h.counts[len(LatencyBuckets)].Load()
	return count, float64(h.sumNs.Load()) / 1e9, buckets
}

// BackendStats are a backend's counters, for metrics.
type BackendStats struct {
	Requests atomic.Int64 // completed with the backend's reply
	Failed   atomic.Int64 // completed with the proxy's error: down, timeout, queue full
	Latency  Histogram    // from the request's write to its reply
}

// monoStart anchors the monotonic timestamps of requests in flight.
var monoStart = time.Now()

func monoNow() int64 { return int64(time.Since(monoStart)) }
