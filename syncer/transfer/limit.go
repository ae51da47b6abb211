package transfer

import (
	"context"
	"fmt"

	"golang.org/x/time/rate"
)

// limiter caps the bytes per second all of a Send's streams put on the
// wire (--bwlimit).
type limiter struct {
	r     *rate.Limiter
	burst int
}

// newLimiter returns a cap of bps bytes per second, or nil for none.
func newLimiter(bps int64) *limiter {
	if bps <= 0 {
		return nil
	}
	// A burst of a twentieth of a second (at least 4 KiB): a message
	// bigger than that waits in pieces, so the rate holds over any second
	// instead of letting a 1 MiB chunk through at once.
	burst := int(max(min(bps/20, 1<<30), 4<<10))
	return &limiter{r: rate.NewLimiter(rate.Limit(bps), burst), burst: burst}
}

// wait blocks until n more bytes may be sent, or ctx ends.
func (l *limiter) wait(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	for n > 0 {
		k := min(n, l.burst)
		if err := l.r.WaitN(ctx, k); err != nil {
			// rate fails early when it sees the deadline would pass first.
			cause := ctx.Err()
			if cause == nil {
				cause = context.DeadlineExceeded
			}
			return fmt.Errorf("wait for the bandwidth limit (%v): %w", err, cause)
		}
		n -= k
	}
	return nil
}
