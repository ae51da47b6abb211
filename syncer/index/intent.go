package index

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"

	statev1 "github.com/georep/georep/proto/georep/state/v1"
)

// bucketIntents holds the objects a batch is about to create on the slave,
// written before the batch is sent and cleared when it is committed. After
// a crash in between, they are the objects the slave may hold that the
// index does not know: the master checks which of them arrived and adopts
// those, so a later delete on the master reaches them.
//
// Each PutIntents writes one value, an IntentBatch, under intentBatchKey
// and a sequence number. Older georep wrote one value per object, under
// the object's key; Intents still reads those. Object keys begin with 'h'
// or 'i', never with intentBatchKey's 0 byte.
var bucketIntents = []byte("intents")

const intentBatchKey = "\x00batch"

// PutIntents records that objs are about to be created on the slave (or
// to get names the index does not know yet). They go in one value: a
// first crawl's batch holds every object of the tree, and a value per
// object cost a B+tree insert each (the batch's records sorted first, to
// keep the inserts from going quadratic) where one value is a single
// write of contiguous pages.
func (t *Tx) PutIntents(objs []Object) error {
	if len(objs) == 0 {
		return nil
	}
	b, err := t.tx.CreateBucketIfNotExists(bucketIntents)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketIntents, err)
	}
	seq, err := b.NextSequence()
	if err != nil {
		return fmt.Errorf("index: number an intent batch: %w", err)
	}
	batch := &statev1.IntentBatch{Intents: make([]*statev1.Intent, len(objs))}
	msgs := make([]statev1.Intent, len(objs))
	for i := range objs {
		msgs[i] = statev1.Intent{Key: []byte(objs[i].Key), Object: record(&objs[i])}
		batch.Intents[i] = &msgs[i]
	}
	v, err := batch.MarshalVT()
	if err != nil {
		return fmt.Errorf("index: encode intents: %w", err)
	}
	if err := b.Put(binary.BigEndian.AppendUint64([]byte(intentBatchKey), seq), v); err != nil {
		return fmt.Errorf("index: store intents: %w", err)
	}
	return nil
}

// Intents returns the objects recorded by PutIntents and not yet cleared,
// in key order; of an object recorded more than once, the latest record.
func (t *Tx) Intents() ([]Object, error) {
	b := t.tx.Bucket(bucketIntents)
	if b == nil {
		return nil, nil
	}
	latest := map[Key]Object{}
	err := b.ForEach(func(k, v []byte) error {
		if !strings.HasPrefix(string(k), intentBatchKey) {
			o, err := decode(Key(k), v)
			if err != nil {
				return fmt.Errorf("intent %x: %w", k, err)
			}
			latest[o.Key] = o
			return nil
		}
		var batch statev1.IntentBatch
		if err := batch.UnmarshalVT(v); err != nil {
			return fmt.Errorf("index: decode intent batch %x (the index is damaged; move it aside to rebuild it with a full crawl): %w", k, err)
		}
		for _, in := range batch.GetIntents() {
			o, err := fromRecord(Key(in.GetKey()), in.GetObject())
			if err != nil {
				return fmt.Errorf("intent batch %x: %w", k, err)
			}
			latest[o.Key] = o
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]Object, 0, len(latest))
	for _, o := range latest {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b Object) int { return strings.Compare(string(a.Key), string(b.Key)) })
	return out, nil
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
