package changelog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/georep/georep/syncer/index"
)

// JournalFile is the journal's file name in the state directory.
const JournalFile = "journal.db"

var bucketRecords = []byte("records")

// JournalRecord is one append to the journal: what the detector saw in one
// group of reads.
type JournalRecord struct {
	Seq      uint64
	Time     time.Time
	Dirty    DirtySet
	Overflow bool
}

// Journal is the persistent change journal: records keyed by a sequence
// number that only grows (bbolt's bucket sequence survives restarts and
// deletions), each committed (fsynced) before Append returns.
type Journal struct {
	db *bolt.DB
}

// OpenJournal opens or creates the journal at path.
func OpenJournal(path string) (*Journal, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("unable to open the change journal %s (is another georep master using this state directory?): %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketRecords)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("unable to initialise the change journal %s: %w", path, err)
	}
	return &Journal{db: db}, nil
}

// Close closes the journal file.
func (j *Journal) Close() error {
	if err := j.db.Close(); err != nil {
		return fmt.Errorf("unable to close the change journal: %w", err)
	}
	return nil
}

// Append writes one record durably and returns its sequence number.
func (j *Journal) Append(t time.Time, dirty DirtySet, overflow bool) (uint64, error) {
	var seq uint64
	err := j.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		var err error
		if seq, err = b.NextSequence(); err != nil {
			return err
		}
		return b.Put(seqKey(seq), encodeRecord(t, dirty, overflow))
	})
	if err != nil {
		return 0, fmt.Errorf("unable to append to the change journal (is the state directory's disk full?): %w", err)
	}
	return seq, nil
}

// Range calls fn for each record with a sequence number above after, in order.
func (j *Journal) Range(after uint64, fn func(JournalRecord) error) error {
	return j.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("change journal holds a key of %d bytes: the file is not a georep journal", len(k))
			}
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("change journal record %d: %w", binary.BigEndian.Uint64(k), err)
			}
			r.Seq = binary.BigEndian.Uint64(k)
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	})
}

// Ack deletes every record with a sequence number up to seq: the slave has
// applied them.
func (j *Journal) Ack(seq uint64) error {
	err := j.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= seq; k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("unable to remove acknowledged records up to %d from the change journal: %w", seq, err)
	}
	return nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// The record encoding (version 1), all integers varint-encoded:
//
//	version byte (1) | time ns | flags byte (1 = overflow) | dir count |
//	per dir: key len, key | rel len, rel | flags byte (1 = self, 2 = whole) |
//	         name count | per name: len, bytes (sorted)
const recordVersion = 1

func encodeRecord(t time.Time, dirty DirtySet, overflow bool) []byte {
	b := []byte{recordVersion}
	b = binary.AppendVarint(b, t.UnixNano())
	b = append(b, boolByte(overflow, 1))
	b = binary.AppendUvarint(b, uint64(len(dirty)))
	for _, k := range slices.Sorted(maps.Keys(dirty)) {
		d := dirty[k]
		b = appendBytes(b, []byte(d.Key))
		b = appendBytes(b, []byte(d.Rel))
		b = append(b, boolByte(d.Self, 1)|boolByte(d.Whole, 2))
		b = binary.AppendUvarint(b, uint64(len(d.Names)))
		for _, n := range slices.Sorted(maps.Keys(d.Names)) {
			b = appendBytes(b, []byte(n))
		}
	}
	return b
}

func boolByte(v bool, bit byte) byte {
	if v {
		return bit
	}
	return 0
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

var errCorrupt = errors.New("corrupt change journal record")

// recordReader decodes with a bounds check before every read.
type recordReader struct {
	b   []byte
	err error
}

func (r *recordReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errCorrupt, what)
	}
}

func (r *recordReader) byte() byte {
	if r.err != nil || len(r.b) < 1 {
		r.fail("truncated")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *recordReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad length")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recordReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad time")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recordReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("length past the end")
		return nil
	}
	v := slices.Clone(r.b[:n])
	r.b = r.b[n:]
	return v
}

// count reads an element count, refusing one that the remaining bytes
// cannot hold (each element takes at least min bytes) so a corrupt count
// cannot make a huge allocation.
func (r *recordReader) count(min int) int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)/min) {
		r.fail("count past the end")
		return 0
	}
	return int(n)
}

func decodeRecord(b []byte) (JournalRecord, error) {
	r := &recordReader{b: b}
	if v := r.byte(); r.err == nil && v != recordVersion {
		return JournalRecord{}, fmt.Errorf("%w: version %d, this build reads %d", errCorrupt, v, recordVersion)
	}
	rec := JournalRecord{Dirty: DirtySet{}}
	rec.Time = time.Unix(0, r.varint())
	rec.Overflow = r.byte()&1 != 0
	ndirs := r.count(4)
	for i := 0; i < ndirs && r.err == nil; i++ {
		key := r.bytes()
		if r.err == nil && len(key) == 0 {
			r.fail("empty directory key")
		}
		rel := string(r.bytes())
		flags := r.byte()
		d := rec.Dirty.dir(index.Key(key), rel)
		d.Self, d.Whole = flags&1 != 0, flags&2 != 0
		nnames := r.count(1)
		for k := 0; k < nnames && r.err == nil; k++ {
			if n := r.bytes(); r.err == nil && !d.Whole {
				d.addName(string(n))
			}
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return JournalRecord{}, r.err
	}
	return rec, nil
}
