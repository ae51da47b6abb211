package gcfloor

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name        string
		live, floor uint64
		want        int
	}{
		{"nothing live yet: the runtime's minimum goal at the floor", 0, 128 * mib, 3200},
		{"below the runtime's minimum", 2 * mib, 128 * mib, 3200},
		{"small heap: the next collection at the floor", 16 * mib, 128 * mib, 700},
		{"half the floor: as GOGC=100", 64 * mib, 128 * mib, 100},
		{"past half the floor: the base", 100 * mib, 128 * mib, 100},
		{"past the floor: the base", 500 * mib, 128 * mib, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := percent(tc.live, tc.floor)
			if got != tc.want {
				t.Fatalf("percent(%d MiB, %d MiB) = %d, want %d", tc.live/mib, tc.floor/mib, got, tc.want)
			}
			// The goal it makes: live grown by the percent, at least the
			// runtime's minimum at that percent.
			goal := max(tc.live*uint64(100+got)/100, heapMinimum*uint64(got)/100)
			if want := max(tc.floor, tc.live*2); goal < want*99/100 || goal > want*101/100 {
				t.Errorf("heap goal %d MiB, want about %d MiB", goal/mib, want/mib)
			}
		})
	}
}

// TestSetAndRestore runs the tuner for real: it raises the percent while
// the heap is small, retunes after collections, leaves an operator's GOGC
// alone, and puts the percent back when its context ends.
func TestSetAndRestore(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)

	// current reads the GC percent without changing it.
	current := func() int {
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		return p
	}
	ctx, cancel := context.WithCancel(context.Background())
	Set(ctx, 256<<20)
	if p := current(); p <= 100 {
		t.Errorf("with a small heap and a 256 MiB floor the GC percent is %d; want it raised", p)
	}
	runtime.GC() // the tuner retunes after each cycle and stays armed
	runtime.GC()
	cancel()
	// The next cycle sees the context ended and restores the percent.
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		p := current()
		if p == 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after its context ended the GC percent is still %d; want 100 back", p)
		}
		time.Sleep(10 * time.Millisecond)
	}

	t.Setenv("GOGC", "100")
	Set(context.Background(), 256<<20)
	if p := current(); p != 100 {
		t.Errorf("with GOGC set the percent became %d; an operator's choice must stand", p)
	}
}
