package syncer

import (
	"context"
	"errors"

	"github.com/georep/georep/client"
	"github.com/georep/georep/syncer/transfer"
)

// sendRsync moves items' content with rsync. (Being built.)
func (m *master) sendRsync(context.Context, *client.Conn, []transfer.Item) ([]transfer.Result, error) {
	return nil, errors.New("--sync-mode rsync is being built")
}
