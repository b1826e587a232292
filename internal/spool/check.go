package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// errDamaged marks a bbolt file that cannot be read.
var errDamaged = errors.New("damaged")

// checkFile opens the bbolt file at path read-only and reads every page
// that its buckets reach. bbolt panics on a damaged page, and a read faults
// when the file is shorter than its page count. Either would crash the
// process later, so both become an error here.
//
// NOTE: damage that bbolt's free-page scan at open reports from a goroutine
// of its own, such as a page referenced twice, still panics there, where
// no recover can reach. Reading every page catches torn, zeroed and
// overwritten pages, not every such case.
func checkFile(path string) (err error) {
	if _, statErr := os.Stat(path); errors.Is(statErr, fs.ErrNotExist) {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errDamaged, r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))

	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	tx, err := db.Begin(false)
	if err != nil {
		return err
	}
	// Deferred after db.Close, so it runs first even on a panic: Close
	// waits for open transactions.
	defer tx.Rollback()

	var sum byte
	err = tx.ForEach(func(_ []byte, bucket *bolt.Bucket) error {
		return bucket.ForEach(func(k, v []byte) error {
			// One byte per page is enough to fault on a missing page.
			for i := 0; i < len(v); i += 4096 {
				sum ^= v[i]
			}
			return nil
		})
	})
	runtime.KeepAlive(sum)
	return err
}
