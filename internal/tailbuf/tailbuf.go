// Package tailbuf keeps the end of a child process's output: what an
// operator needs when ssh, a slave or rsync fails is its last words, and a
// chatty child must not grow the caller's memory without bound.
package tailbuf

import "sync"

// Buffer is an io.Writer that keeps the last Max bytes written to it. It
// is safe for concurrent use (exec copies a child's stderr from its own
// goroutine).
type Buffer struct {
	mu   sync.Mutex
	max  int
	data []byte
}

// New returns a Buffer keeping the last max bytes.
func New(max int) *Buffer { return &Buffer{max: max} }

// Write keeps the tail of what was written so far; it never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(p) >= b.max {
		b.data = append(b.data[:0], p[len(p)-b.max:]...)
		return len(p), nil
	}
	if over := len(b.data) + len(p) - b.max; over > 0 {
		b.data = append(b.data[:0], b.data[over:]...)
	}
	b.data = append(b.data, p...)
	return len(p), nil
}

// String returns the bytes kept.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.data)
}
