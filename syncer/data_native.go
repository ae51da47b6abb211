package syncer

import (
	"context"

	"github.com/georep/georep/client"
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

// sendNative moves items' content with the native chunk stream.
func (m *master) sendNative(ctx context.Context, c *client.Conn, items []transfer.Item) ([]transfer.Result, error) {
	results, _, err := transfer.Send(ctx, c.Slave, m.root, items, transfer.Options{Jobs: m.cfg.SyncJobs, Logger: m.log,
		Installed: func(_ transfer.Item, sent int64) { m.obs.FileSent(sent) }})
	return results, err
}
