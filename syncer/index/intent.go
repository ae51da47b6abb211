package index

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// bucketIntents holds the objects a batch is about to create on the slave,
// written before the batch is sent and cleared when it is committed. After
// a crash in between, they are the objects the slave may hold that the
// index does not know: the master checks which of them arrived and adopts
// those, so a later delete on the master reaches them.
var bucketIntents = []byte("intents")

// PutIntent records that o is about to be created on the slave.
func (t *Tx) PutIntent(o Object) error {
	b, err := t.tx.CreateBucketIfNotExists(bucketIntents)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketIntents, err)
	}
	v, err := encode(o)
	if err != nil {
		return err
	}
	return b.Put([]byte(o.Key), v)
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
