package syncer

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/georep/georep/internal/blocksum"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/syncer/plan"
	"github.com/georep/georep/syncer/transfer"
)

// Limits of what sumsAhead asks for at once: the biggest delta candidates
// gain most, and the slave reads each base whole while the Handshake and
// the first calls wait on its two CPUs.
const (
	sumsAheadFiles = 8
	sumsAheadBytes = 1 << 30
)

// sumsAhead asks for the block sums of the files a batch will send as
// deltas while the connection's Handshake is in flight. The first thing a
// delta waits for is its base's sums, one round trip and the slave's read
// of the base after the data phase starts; made during the Handshake,
// they are there (or on their way) when it starts. That is the usual case
// for a --once run, whose plan is made during the ssh login.
//
// want notes a batch's candidates, start (client.Options.Alongside) asks
// for them on a connection coming up before the data phase (late), take
// hands each to the transfer once (transfer.Options.SumsAhead), and drop
// ends the batch's calls.
type sumsAhead struct {
	ctx context.Context // the session's: no call outlives it
	bg  *sync.WaitGroup // the master's, which Run waits for

	mu     sync.Mutex
	wants  []sumsWant
	calls  map[gfid.GFID]*sumsCall
	cancel context.CancelFunc // ends the calls of the batch
}

type sumsWant struct {
	g  gfid.GFID
	bs int
}

// sumsCall is one BlockSums call. begun and skip are guarded by the
// sumsAhead's mu; resp and err are set before done closes, which happens
// only for a call that began.
type sumsCall struct {
	req   *pb.BlockSumsRequest
	begun bool // the call was made
	skip  bool // taken before it began: not to be made
	done  chan struct{}
	resp  *pb.BlockSumsResponse
	err   error
}

func newSumsAhead(ctx context.Context, bg *sync.WaitGroup) *sumsAhead {
	return &sumsAhead{ctx: ctx, bg: bg, calls: map[gfid.GFID]*sumsCall{}}
}

// want notes the delta candidates among a batch's data, the biggest first:
// files the slave has (not new, not created by their transfer) of a size
// that goes as a delta.
func (a *sumsAhead) want(data []plan.DataItem) {
	var cands []plan.DataItem
	for _, d := range data {
		if _, ok := blocksum.BlockSize(d.Size); ok && !d.New && d.Create == nil && d.Size >= transfer.DeltaMin {
			cands = append(cands, d)
		}
	}
	slices.SortStableFunc(cands, func(x, y plan.DataItem) int { return cmp.Compare(y.Size, x.Size) })
	var picked []sumsWant
	var total int64
	for _, d := range cands {
		if len(picked) == sumsAheadFiles {
			break
		}
		if total+d.Size > sumsAheadBytes {
			continue // a smaller one may still fit
		}
		bs, _ := blocksum.BlockSize(d.Size)
		picked = append(picked, sumsWant{g: d.GFID, bs: bs})
		total += d.Size
	}
	a.mu.Lock()
	a.wants = picked
	a.mu.Unlock()
}

// start asks slave for the sums wanted, one call after another (the
// biggest file first) so that the slave reads one base at a time beside
// the Handshake, and returns at once. It takes the wants: a connection
// made later in the batch (a redial) does not ask again.
func (a *sumsAhead) start(slave pb.SlaveClient) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.wants) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(a.ctx)
	if a.cancel != nil {
		a.cancel()
	}
	a.cancel = cancel
	calls := make([]*sumsCall, 0, len(a.wants))
	for _, w := range a.wants {
		c := &sumsCall{req: &pb.BlockSumsRequest{Gfid: w.g.Bytes(), BlockSize: uint32(w.bs)}, done: make(chan struct{})}
		a.calls[w.g] = c
		calls = append(calls, c)
	}
	a.wants = nil
	a.bg.Go(func() {
		for _, c := range calls {
			a.mu.Lock()
			if c.skip || ctx.Err() != nil {
				a.mu.Unlock()
				continue
			}
			c.begun = true
			a.mu.Unlock()
			c.resp, c.err = slave.BlockSums(ctx, c.req)
			close(c.done)
		}
	})
}

// take returns the sums asked ahead for g in blocks of bs, waiting for
// their call, or nil: none asked, another block size (the file changed
// size since the plan), a call not yet made (the caller had better ask
// itself than wait behind the others), or a failed call. Each is handed
// out once.
func (a *sumsAhead) take(ctx context.Context, g gfid.GFID, bs int) *pb.BlockSumsResponse {
	a.mu.Lock()
	c := a.calls[g]
	delete(a.calls, g)
	if c != nil && (!c.begun || c.req.GetBlockSize() != uint32(bs)) {
		c.skip = true
		c = nil
	}
	a.mu.Unlock()
	if c == nil {
		return nil
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return nil
	}
	if c.err != nil {
		return nil
	}
	return c.resp
}

// late says the batch's data phase has begun: a connection that comes up
// now (an extra data connection, a redial) is too late to ask ahead, and
// asking would only make the slave read bases the transfer may already
// have asked for itself.
func (a *sumsAhead) late() {
	a.mu.Lock()
	a.wants = nil
	a.mu.Unlock()
}

// drop forgets the batch's wants and the sums it did not take, and ends
// their calls.
func (a *sumsAhead) drop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.wants = nil
	clear(a.calls)
	if a.cancel != nil {
		a.cancel()
		a.cancel = nil
	}
}
