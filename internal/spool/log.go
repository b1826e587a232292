package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A Bolt spool writes each accepted entry to a log file before Append returns,
// and moves logged entries into its bbolt file later, many at a time (a
// checkpoint). One log write and one fdatasync then make a whole group of
// concurrent Appends durable, where a bbolt commit costs two fdatasyncs
// and a write of every page the change touched.
//
// A log file is a sequence of records:
//
//	length  uint32, big-endian: bytes of seq and value
//	crc     uint32, big-endian: CRC-32C of length, seq and value
//	seq     uint64, big-endian: the entry's Seq
//	value   the entry, encoded by encodeEntry
//
// Files are reused once a checkpoint has moved their entries into the bbolt
// file, and a reused file is written again from its start, over older
// records. Reading a file therefore skips any record that is incomplete,
// fails its checksum, or has a Seq no higher than the record before it.
// The checkpoint's highest Seq, kept in the bbolt file, tells which of the
// records read are already there.

const (
	logHeader = 4 + 4 + 8

	// logPrealloc is the size of zeros a new log file is filled with.
	// Writes within it change no file size, so their fdatasync has no
	// file system metadata to write.
	logPrealloc = 4 << 20

	// maxCleanLogs bounds the log files kept for reuse.
	maxCleanLogs = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendLogRecord appends the record of one entry to buf.
func appendLogRecord(buf []byte, seq uint64, value []byte) []byte {
	start := len(buf)
	buf = binary.BigEndian.AppendUint32(buf, uint32(8+len(value)))
	buf = binary.BigEndian.AppendUint32(buf, 0)
	buf = binary.BigEndian.AppendUint64(buf, seq)
	buf = append(buf, value...)
	binary.BigEndian.PutUint32(buf[start+4:], recordCRC(buf[start:]))
	return buf
}

// recordCRC is the checksum of a record whose header starts rec.
func recordCRC(rec []byte) uint32 {
	crc := crc32.Update(0, castagnoli, rec[:4])
	return crc32.Update(crc, castagnoli, rec[8:])
}

// logRecord is one entry read from a log file. value is a slice of the
// file's data.
type logRecord struct {
	seq   uint64
	value []byte
}

// maxLogRecord bounds the length a record header may give. It is far above
// any webhook the bridge accepts, and stops a damaged length from making
// the reader check a checksum over most of a file.
const maxLogRecord = 64 << 20

// readLog returns the records of data, a log file's content, whose Seq is
// above after, in file order. A record counts only when its checksum
// matches and its Seq is above that of the record before it. Past a
// record that does not count, the reader looks for the next one that does,
// byte by byte, and damaged counts the regions it skipped that way before
// a record above after. The bytes after the last record are not counted:
// they are normal after a crash (an interrupted write, zeros, or the older
// records of a reused file, all at or below after).
func readLog(data []byte, after uint64) (records []logRecord, damaged int) {
	var last uint64
	skipping := false
	for off := 0; len(data)-off >= logHeader; {
		n := binary.BigEndian.Uint32(data[off:])
		ok := n >= 8 && n <= maxLogRecord && uint64(n) <= uint64(len(data)-off-8)
		var rec []byte
		var seq uint64
		if ok {
			rec = data[off : off+8+int(n)]
			seq = binary.BigEndian.Uint64(rec[8:])
			ok = binary.BigEndian.Uint32(rec[4:]) == recordCRC(rec) && seq > last
		}
		if !ok {
			skipping = true
			off++
			continue
		}
		if seq > after {
			if skipping && len(records) > 0 {
				damaged++
			}
			records = append(records, logRecord{seq: seq, value: rec[logHeader:]})
		}
		skipping = false
		last = seq
		off += len(rec)
	}
	return records, damaged
}

// logFile is an open log file.
type logFile struct {
	f      *os.File
	number int
	off    int64  // offset of the next record
	last   uint64 // Seq of the last record written

	// failed is set when a write or fdatasync failed. The file may then
	// hold records of Appends that returned an error, so it is deleted
	// after the next checkpoint instead of being reused.
	failed bool
}

const (
	logNamePrefix = "log-"
	logNameSuffix = ".wal"
)

func logName(number int) string {
	return fmt.Sprintf("%s%06d%s", logNamePrefix, number, logNameSuffix)
}

// logNumber returns the number in a log file's name, or false for another
// name.
func logNumber(name string) (int, bool) {
	digits, ok := strings.CutPrefix(name, logNamePrefix)
	if !ok {
		return 0, false
	}
	if digits, ok = strings.CutSuffix(digits, logNameSuffix); !ok {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil && n >= 0
}

// createLog creates log file number in dir, filled with logPrealloc zeros,
// and makes its directory entry durable.
func createLog(dir string, number int) (*logFile, error) {
	path := filepath.Join(dir, logName(number))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < logPrealloc && err == nil; off += int64(len(zeros)) {
		_, err = f.WriteAt(zeros, off)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return &logFile{f: f, number: number}, nil
}

// write writes buf at the end of the log and waits until it is on disk.
func (l *logFile) write(buf []byte) error {
	if _, err := l.f.WriteAt(buf, l.off); err != nil {
		l.failed = true
		return err
	}
	if err := fdatasync(l.f); err != nil {
		l.failed = true
		return err
	}
	l.off += int64(len(buf))
	return nil
}

// remove closes and deletes the file.
func (l *logFile) remove() error {
	return errors.Join(l.f.Close(), os.Remove(l.f.Name()))
}

// syncDir makes the directory entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}
