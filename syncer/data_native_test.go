package syncer

import (
	"testing"

	pb "github.com/georep/georep/proto/georep/v1"
)

// TestChunkCompression: --compress against what the slave offered; a
// slave that names no zstd gets plain chunks, or a clear refusal when
// zstd was demanded.
func TestChunkCompression(t *testing.T) {
	zstd := []pb.Compression{pb.Compression_COMPRESSION_ZSTD}
	tests := []struct {
		mode    string
		offered []pb.Compression
		want    pb.Compression
		wantErr bool
	}{
		{mode: CompressAuto, offered: zstd, want: pb.Compression_COMPRESSION_ZSTD},
		{mode: CompressAuto, offered: nil, want: pb.Compression_COMPRESSION_UNSPECIFIED},
		{mode: "", offered: zstd, want: pb.Compression_COMPRESSION_ZSTD},
		{mode: CompressZstd, offered: zstd, want: pb.Compression_COMPRESSION_ZSTD},
		{mode: CompressZstd, offered: nil, wantErr: true},
		{mode: CompressNone, offered: zstd, want: pb.Compression_COMPRESSION_UNSPECIFIED},
		{mode: "gzip", offered: zstd, wantErr: true},
	}
	for _, tc := range tests {
		got, err := chunkCompression(tc.mode, tc.offered)
		if (err != nil) != tc.wantErr {
			t.Errorf("chunkCompression(%q, %v): error %v, want error %v", tc.mode, tc.offered, err, tc.wantErr)
			continue
		}
		if err == nil && got != tc.want {
			t.Errorf("chunkCompression(%q, %v) = %v, want %v", tc.mode, tc.offered, got, tc.want)
		}
	}
}
