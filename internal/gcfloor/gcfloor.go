// Package gcfloor keeps the Go garbage collector from running while a
// process's heap is small. The runtime's pacer starts collecting at 4 MiB
// and then whenever the heap doubles (GOGC=100), so a heap that grows to
// tens of MiB in a burst (a master's first crawl builds its plan of the
// whole tree) is marked over and over on its way up, to free nothing. With
// a floor, the collector waits until the heap reaches the floor, or twice
// the live heap once that is larger: a heap past half the floor is paced
// exactly as GOGC=100 paces it, so large trees use no more memory than
// before, and small ones at most the floor.
package gcfloor

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// Set keeps the collector from running below floor bytes of heap until ctx
// ends, when it puts GOGC=100, the runtime's default, back. It does nothing
// when the operator chose the pacing (GOGC or GOMEMLIMIT in the
// environment). The GC percent is the process's: one Set at a time.
func Set(ctx context.Context, floor uint64) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	t := &tuner{ctx: ctx, floor: floor, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	t.tune()
	t.arm()
}

type tuner struct {
	ctx    context.Context
	floor  uint64
	sample []metrics.Sample
}

// base is GOGC's default, the pacing above the floor.
const base = 100

// sentinel is garbage the collector finds in every cycle: its finalizer
// runs after each one, retunes and makes the next sentinel.
type sentinel struct{ _ [16]byte }

func (t *tuner) arm() {
	s := new(sentinel)
	runtime.SetFinalizer(s, func(*sentinel) {
		if t.ctx.Err() != nil {
			debug.SetGCPercent(base)
			return
		}
		t.tune()
		t.arm()
	})
}

// tune sets the GC percent so that the next collection comes when the heap
// reaches the floor, or doubles over the live heap, whichever is later.
func (t *tuner) tune() {
	metrics.Read(t.sample)
	var live uint64
	if t.sample[0].Value.Kind() == metrics.KindUint64 {
		live = t.sample[0].Value.Uint64()
	}
	debug.SetGCPercent(percent(live, t.floor))
}

// heapMinimum is the runtime's smallest heap goal at GOGC=100: at GC
// percent p the goal is at least heapMinimum*p/100, however small the live
// heap.
const heapMinimum = 4 << 20

// percent is the GC percent that puts the next collection at floor bytes
// of heap, or at base percent over live, whichever is more. Over a small
// live heap the runtime's minimum goal grows with the percent too, so the
// percent is capped where that minimum reaches the floor.
func percent(live, floor uint64) int {
	if live >= floor {
		return base
	}
	p := int(floor*100/max(live, 1)) - 100
	p = min(p, int(floor*100/heapMinimum))
	return max(base, p)
}
