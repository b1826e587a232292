package spool

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// A Bolt spool writes each accepted entry to a log file before Append returns,
// and moves logged entries into its bbolt file later, many at a time (a
// checkpoint). One log write and one fdatasync then make a whole group of
// concurrent Appends durable, where a bbolt commit costs two fdatasyncs
// and a write of every page the change touched.
//
// Files are reused once a checkpoint has moved their entries, and a reused
// file is written again from its start, over older records. Each use
// starts with a file header that holds a new random salt, and every record
// is checked with that salt:
//
//	file header  magic "bmpl", version, 3 bytes zero, salt (8 bytes),
//	             CRC-32C of the 16 bytes before it
//	record       length of value (uint32), seq (uint64),
//	             CRC-32C of salt, length and seq (uint32),
//	             first 8 bytes of SHA-256 of salt, length, seq and value,
//	             value: the entry, encoded by encodeEntry
//
// All integers are big-endian. Older records, and anything a webhook's body
// may contain, fail the checks, so the reader can look past a damaged
// record for the next good one. A record with seq 0 seals a full file: its
// value holds the number of records written to the file. Every write ends
// with logHeader zero bytes, which the next write overwrites, so bytes
// other than zeros right after the last good record show damage, or a
// write that a crash of the machine cut short.

const (
	logMagic      = "bmpl"
	logVersion    = 1
	logFileHeader = 4 + 1 + 3 + 8 + 4
	logHeader     = 4 + 8 + 4 + 8

	// logPrealloc is the size of zeros a new log file is filled with.
	// Writes within it change no file size, so their fdatasync has no
	// file system metadata to write.
	logPrealloc = 4 << 20

	// maxCleanLogs bounds the log files kept for reuse.
	maxCleanLogs = 2
)

// MaxEntryBytes bounds an entry's encoded size in a Bolt spool: Append
// returns ErrTooLarge beyond it.
const MaxEntryBytes = maxLogRecord

// maxLogRecord bounds the length a record header may give. It is far above
// any webhook the bridge accepts by default.
const maxLogRecord = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// newSalt returns a random salt for one use of a log file.
func newSalt() (salt [8]byte, err error) {
	_, err = rand.Read(salt[:])
	return salt, err
}

// appendFileHeader appends a log file's header with salt to buf.
func appendFileHeader(buf []byte, salt [8]byte) []byte {
	start := len(buf)
	buf = append(buf, logMagic...)
	buf = append(buf, logVersion, 0, 0, 0)
	buf = append(buf, salt[:]...)
	return binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf[start:], castagnoli))
}

// recordChecker computes the two checks of records with one salt.
type recordChecker struct {
	salt [8]byte
	hash hash.Hash
	sum  []byte
}

func newRecordChecker(salt [8]byte) *recordChecker {
	return &recordChecker{salt: salt, hash: sha256.New(), sum: make([]byte, 0, sha256.Size)}
}

// headerCheck returns the CRC-32C of the salt and lengthSeq, a record's
// first 12 bytes.
func (c *recordChecker) headerCheck(lengthSeq []byte) uint32 {
	crc := crc32.Update(0, castagnoli, c.salt[:])
	return crc32.Update(crc, castagnoli, lengthSeq)
}

// bodyCheck returns the first 8 bytes of the SHA-256 of the salt,
// lengthSeq and value.
func (c *recordChecker) bodyCheck(lengthSeq, value []byte) uint64 {
	c.hash.Reset()
	c.hash.Write(c.salt[:])
	c.hash.Write(lengthSeq)
	c.hash.Write(value)
	c.sum = c.hash.Sum(c.sum[:0])
	return binary.BigEndian.Uint64(c.sum)
}

// appendRecord appends the record of seq and value to buf.
func (c *recordChecker) appendRecord(buf []byte, seq uint64, value []byte) []byte {
	start := len(buf)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(value)))
	buf = binary.BigEndian.AppendUint64(buf, seq)
	lengthSeq := buf[start : start+12]
	buf = binary.BigEndian.AppendUint32(buf, c.headerCheck(lengthSeq))
	buf = binary.BigEndian.AppendUint64(buf, c.bodyCheck(lengthSeq, value))
	return append(buf, value...)
}

// appendSeal appends the record that seals a file of records records.
func (c *recordChecker) appendSeal(buf []byte, records int) []byte {
	return c.appendRecord(buf, 0, binary.BigEndian.AppendUint64(nil, uint64(records)))
}

// logRecord is one entry read from a log file. value is a slice of the
// file's data.
type logRecord struct {
	seq   uint64
	value []byte
}

// logReading describes what reading a log file found besides its records.
type logReading struct {
	badHeader bool // the data is not empty, but its file header is damaged
	damaged   int  // stretches of bad bytes skipped before a good record
	missing   int  // records that the file's seal counts but were not read
	badEnd    bool // bytes other than zeros follow the last good record
}

// lost reports whether the file may have held records that could not be
// read.
func (r logReading) lost() bool {
	return r.badHeader || r.damaged > 0 || r.missing > 0 || r.badEnd
}

// readLog returns the records of data, a log file's content, whose Seq is
// above after, in file order. A record counts when both checks match with
// the file's salt and its Seq is above that of the record before it. Past
// bytes that do not form such a record, the reader looks for the next
// record that does, byte by byte. A damaged file header still gives its
// salt a try: records pass only if the salt bytes are intact.
func readLog(data []byte, after uint64) ([]logRecord, logReading) {
	var r logReading
	if len(data) < logFileHeader {
		r.badHeader = nonZero(data)
		return nil, r
	}
	if string(data[:4]) != logMagic || data[4] != logVersion ||
		binary.BigEndian.Uint32(data[16:]) != crc32.Checksum(data[:16], castagnoli) {
		if !nonZero(data) {
			return nil, r // created, never written
		}
		r.badHeader = true
	}

	c := newRecordChecker([8]byte(data[8:16]))
	var records []logRecord
	var last uint64
	read, skipping, sealed := 0, false, false
	end := logFileHeader // just after the last good record
	for off := logFileHeader; len(data)-off >= logHeader; {
		seq, value, ok := c.record(data[off:])
		if ok && seq == 0 {
			if skipping {
				r.damaged++
			}
			if len(value) == 8 {
				r.missing = max(0, int(binary.BigEndian.Uint64(value))-read)
			}
			sealed = true
			break
		}
		if !ok || seq <= last {
			skipping = true
			off++
			continue
		}

		if skipping {
			r.damaged++
		}
		skipping = false
		last = seq
		read++
		if seq > after {
			records = append(records, logRecord{seq: seq, value: value})
		}
		off += logHeader + len(value)
		end = off
	}

	if !sealed {
		r.badEnd = nonZero(data[end:min(len(data), end+logHeader)])
	}
	return records, r
}

// record returns the Seq and value of the record at the start of data, and
// whether both its checks match.
func (c *recordChecker) record(data []byte) (seq uint64, value []byte, ok bool) {
	n := binary.BigEndian.Uint32(data)
	if n > maxLogRecord || uint64(n) > uint64(len(data)-logHeader) ||
		binary.BigEndian.Uint32(data[12:]) != c.headerCheck(data[:12]) {
		return 0, nil, false
	}
	value = data[logHeader : logHeader+int(n)]
	if binary.BigEndian.Uint64(data[16:]) != c.bodyCheck(data[:12], value) {
		return 0, nil, false
	}
	return binary.BigEndian.Uint64(data[4:]), value, true
}

// nonZero reports whether b contains a byte other than zero.
func nonZero(b []byte) bool {
	return slices.ContainsFunc(b, func(c byte) bool { return c != 0 })
}

// logFile is an open log file.
type logFile struct {
	f       *os.File
	number  int
	off     int64  // offset of the next record
	last    uint64 // Seq of the last record written
	records int    // records written since the file header
	checker *recordChecker

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

// endMark is the zeros that end every write, so the file's end shows.
var endMark [logHeader]byte

// write writes buf and the end mark at the end of the log and waits until
// they are on disk.
func (l *logFile) write(buf []byte) error {
	if _, err := l.f.WriteAt(append(buf, endMark[:]...), l.off); err != nil {
		l.failed = true
		return err
	}
	if err := fdatasync(l.f); err != nil {
		l.failed = true
		return err
	}
	// The next write goes over the end mark.
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
