package syncer

import (
	"context"
	"fmt"
	"slices"

	"github.com/georep/georep/client"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/syncer/transfer"
)

// SyncNative moves file data over the session's gRPC connection (PutFiles
// with block deltas); SyncRsync runs rsync into the slave's staging area.
const (
	SyncNative = "native"
	SyncRsync  = "rsync"
)

// Compress values: zstd where the slave accepts it and it shrinks a chunk;
// zstd or fail; never.
const (
	CompressAuto = "auto"
	CompressZstd = "zstd"
	CompressNone = "none"
)

// chunkCompression picks the chunk encoding for a --compress mode and
// the compressions the slave named at Handshake.
func chunkCompression(mode string, offered []pb.Compression) (pb.Compression, error) {
	zstd := slices.Contains(offered, pb.Compression_COMPRESSION_ZSTD)
	switch mode {
	case CompressAuto, "":
		if zstd {
			return pb.Compression_COMPRESSION_ZSTD, nil
		}
		return pb.Compression_COMPRESSION_UNSPECIFIED, nil
	case CompressZstd:
		if !zstd {
			return 0, fmt.Errorf("--compress zstd: the slave does not accept zstd chunks (an older georep?); upgrade it or use --compress auto or none")
		}
		return pb.Compression_COMPRESSION_ZSTD, nil
	case CompressNone:
		return pb.Compression_COMPRESSION_UNSPECIFIED, nil
	}
	return 0, fmt.Errorf("--compress %q: accepted values are %s, %s and %s", mode, CompressAuto, CompressZstd, CompressNone)
}

// sendNative moves items' content with the native chunk stream.
func (m *master) sendNative(ctx context.Context, c *client.Conn, items []transfer.Item) ([]transfer.Result, error) {
	comp, err := chunkCompression(m.cfg.Compress, c.Info.GetCompressions())
	if err != nil {
		return nil, err
	}
	results, _, err := transfer.Send(ctx, c.Slave, m.root, items, transfer.Options{Jobs: m.cfg.SyncJobs, Logger: m.log,
		Compression: comp, BwLimit: m.cfg.BwLimit,
		Installed: func(_ transfer.Item, sent int64) { m.obs.FileSent(sent) }})
	return results, err
}
