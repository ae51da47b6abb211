package index

import (
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// bucketIntents holds the objects a batch is about to create on the slave,
// written before the batch is sent and cleared when it is committed. After
// a crash in between, they are the objects the slave may hold that the
// index does not know: the master checks which of them arrived and adopts
// those, so a later delete on the master reaches them.
var bucketIntents = []byte("intents")

// PutIntents records that objs are about to be created on the slave (or
// to get names the index does not know yet).
//
// They are written in key order into pages filled to the brim: bbolt
// shifts a node's later keys on every insert until the node is split at
// commit, so keys in a crawl's order would make a large batch quadratic,
// and the bucket is only ever read whole and deleted whole.
func (t *Tx) PutIntents(objs []Object) error {
	if len(objs) == 0 {
		return nil
	}
	b, err := t.tx.CreateBucketIfNotExists(bucketIntents)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketIntents, err)
	}
	b.FillPercent = 1
	sorted := slices.SortedFunc(slices.Values(objs), func(a, b Object) int { return strings.Compare(string(a.Key), string(b.Key)) })
	for _, o := range sorted {
		v, err := encode(o)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(o.Key), v); err != nil {
			return fmt.Errorf("index: store intent: %w", err)
		}
	}
	return nil
}

// Intents returns the objects recorded by PutIntent and not yet cleared.
func (t *Tx) Intents() ([]Object, error) {
	b := t.tx.Bucket(bucketIntents)
	if b == nil {
		return nil, nil
	}
	var out []Object
	err := b.ForEach(func(k, v []byte) error {
		o, err := decode(Key(k), v)
		if err != nil {
			return fmt.Errorf("intent %x: %w", k, err)
		}
		out = append(out, o)
		return nil
	})
	return out, err
}

// ClearIntents forgets every recorded intent.
func (t *Tx) ClearIntents() error {
	if t.tx.Bucket(bucketIntents) == nil {
		return nil
	}
	if err := t.tx.DeleteBucket(bucketIntents); err != nil && err != bolt.ErrBucketNotFound {
		return fmt.Errorf("clear intents: %w", err)
	}
	return nil
}
