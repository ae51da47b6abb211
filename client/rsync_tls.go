package client

import (
	"context"
	"errors"
)

// tlsRsyncShell relays rsync through an RsyncTunnel stream. (Being built.)
func (c *Conn) tlsRsyncShell(context.Context) (*RsyncShell, error) {
	return nil, errors.New("rsync mode over mTLS is being built")
}
