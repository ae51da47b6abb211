package tailbuf

import (
	"strings"
	"testing"
)

func TestBufferKeepsTheTail(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{"fits", 10, []string{"abc", "def"}, "abcdef"},
		{"exactly full", 6, []string{"abc", "def"}, "abcdef"},
		{"drops the oldest", 4, []string{"abc", "def"}, "cdef"},
		{"one write longer than max", 3, []string{"ab", "cdefgh"}, "fgh"},
		{"many small writes", 5, strings.Split("0123456789", ""), "56789"},
		{"nothing", 4, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.max)
			for _, w := range tc.writes {
				n, err := b.Write([]byte(w))
				if n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if got := b.String(); got != tc.want {
				t.Errorf("kept %q, want %q", got, tc.want)
			}
		})
	}
}
