package proxy

import (
	"math"
	"testing"
)

func TestQuantile(t *testing.T) {
	buckets := make([]uint64, 17)
	if v := quantile(0.5, buckets); !math.IsNaN(v) {
		t.Fatalf("quantile of nothing = %v, want NaN", v)
	}
	// 100 observations in (0.25ms, 0.5ms], one in (100ms, 250ms].
	buckets[2], buckets[10] = 100, 1
	if v := quantile(0.5, buckets); v <= 0.25 || v > 0.5 {
		t.Errorf("p50 = %v ms, want in (0.25, 0.5]", v)
	}
	if v := quantile(0.99, buckets); v <= 0.25 || v > 0.5 {
		t.Errorf("p99 = %v ms, want in (0.25, 0.5]", v)
	}
	if v := quantile(1, buckets); v <= 100 || v > 250 {
		t.Errorf("p100 = %v ms, want in (100, 250]", v)
	}
	over := make([]uint64, 17)
	over[16] = 5 // beyond the last bound (10s)
	if v := quantile(0.5, over); v != 10000 {
		t.Errorf("p50 beyond the last bucket = %v ms, want 10000", v)
	}
}

// TestSeriesRingBounded fills the ring past its size: the snapshot holds the
// last seriesLen samples, oldest first, and a slave absent from older samples
// has nulls there.
func TestSeriesRingBounded(t *testing.T) {
	sp := &sampler{states: map[string]string{}}
	total := seriesLen + 250
	for i := 0; i < total; i++ {
		slot := &sp.ring[sp.n%seriesLen]
		smp := sample{t: int64(i) * 1000, reads: float64(i), p50: math.NaN(), p99: 1, slaves: slot.slaves[:0]}
		smp.slaves = append(smp.slaves, slaveSample{name: "slave-1", lagMsgs: int64(i)})
		if i >= total-10 {
			smp.slaves = append(smp.slaves, slaveSample{name: "slave-2", lagMs: 7})
		}
		*slot = smp
		sp.n++
	}
	s := sp.snapshot()
	if len(s.T) != seriesLen || len(s.Reads) != seriesLen || len(s.P50Ms) != seriesLen {
		t.Fatalf("snapshot holds %d samples, want %d", len(s.T), seriesLen)
	}
	if first, last := s.T[0], s.T[seriesLen-1]; first != 250*1000 || last != int64(total-1)*1000 {
		t.Errorf("samples from %d to %d, want %d to %d", first, last, 250*1000, (total-1)*1000)
	}
	if s.P50Ms[0] != nil || s.P99Ms[0] == nil || *s.P99Ms[0] != 1 {
		t.Errorf("latency: p50 %v (want null), p99 %v (want 1)", s.P50Ms[0], s.P99Ms[0])
	}
	if len(s.Slaves) != 2 || s.Slaves[1].Name != "slave-2" {
		t.Fatalf("slaves %+v", s.Slaves)
	}
	if s.Slaves[1].LagMs[0] != nil || s.Slaves[1].LagMs[seriesLen-1] == nil || *s.Slaves[1].LagMs[seriesLen-1] != 7 {
		t.Errorf("slave-2's lag: null before it was there, 7 at the end")
	}
	if v := s.Slaves[0].LagMessages[seriesLen-1]; v == nil || *v != int64(total-1) {
		t.Errorf("slave-1's last lag = %v, want %d", v, total-1)
	}
}

// TestSeriesStateEvents records changes only, not a slave's first state, and
// keeps at most maxStateEvents.
func TestSeriesStateEvents(t *testing.T) {
	sp := &sampler{states: map[string]string{}}
	sp.noteState(1, "slave-1", "online")
	sp.noteState(2, "slave-1", "online")
	if len(sp.events) != 0 {
		t.Fatalf("events %+v, want none", sp.events)
	}
	sp.noteState(3, "slave-1", "down")
	if len(sp.events) != 1 || sp.events[0] != (StateEvent{T: 3, Slave: "slave-1", State: "down", From: "online"}) {
		t.Fatalf("events %+v", sp.events)
	}
	for i := 0; i < 2*maxStateEvents; i++ {
		sp.noteState(int64(10+i), "slave-1", []string{"online", "down"}[i%2])
	}
	if len(sp.events) != maxStateEvents || sp.events[maxStateEvents-1].T != int64(10+2*maxStateEvents-1) {
		t.Fatalf("%d events kept, last at %d", len(sp.events), sp.events[len(sp.events)-1].T)
	}
}
