package spool

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

var testSalt = [8]byte{1, 2, 3, 4, 5, 6, 7, 8}

// logOf returns a log file with one record per seq, with value "v<seq>".
func logOf(seqs ...uint64) []byte {
	return logWithSalt(testSalt, seqs...)
}

func logWithSalt(salt [8]byte, seqs ...uint64) []byte {
	c := newRecordChecker(salt)
	buf := appendFileHeader(nil, salt)
	for _, seq := range seqs {
		buf = c.appendRecord(buf, seq, []byte("v"+strconv.FormatUint(seq, 10)))
	}
	return buf
}

// recordsOf returns the records of seqs alone, without a file header.
func recordsOf(salt [8]byte, seqs ...uint64) []byte {
	return logWithSalt(salt, seqs...)[logFileHeader:]
}

func seqsOf(records []logRecord) []uint64 {
	var out []uint64
	for _, r := range records {
		out = append(out, r.seq)
	}
	return out
}

// withEnd returns data followed by the end mark, as the writer leaves it.
func withEnd(data []byte) []byte {
	return append(slices.Clone(data), endMark[:]...)
}

func TestReadLog(t *testing.T) {
	full := logOf(1, 2, 3)
	second, third := len(logOf(1)), len(logOf(1, 2))
	flip := func(data []byte, at int) []byte {
		data = slices.Clone(data)
		data[at] ^= 1
		return data
	}
	c := newRecordChecker(testSalt)
	sealed := withEnd(c.appendSeal(slices.Clone(logOf(1, 2)), 2))
	otherSalt := [8]byte{9, 9, 9, 9, 9, 9, 9, 9}

	// A webhook body that holds a record made up by its sender, with a
	// huge Seq and a guessed salt.
	planted := recordsOf(otherSalt, 1<<62)
	withPlanted := c.appendRecord(appendFileHeader(nil, testSalt), 1, planted)
	withPlanted = withEnd(c.appendRecord(withPlanted, 2, []byte("v2")))

	tests := []struct {
		name  string
		data  []byte
		after uint64
		want  []uint64
		read  logReading
	}{
		{"empty", nil, 0, nil, logReading{}},
		{"zeros", make([]byte, 100), 0, nil, logReading{}},
		{"not a log", []byte("not a log file at all"), 0, nil, logReading{badHeader: true, badEnd: true}},
		{"salt damaged", flip(withEnd(full), 9), 0, nil, logReading{badHeader: true, badEnd: true}},
		{"file header damaged outside the salt", flip(withEnd(full), 1), 0, []uint64{1, 2, 3}, logReading{badHeader: true}},
		{"all", withEnd(full), 0, []uint64{1, 2, 3}, logReading{}},
		{"above the checkpoint", withEnd(full), 1, []uint64{2, 3}, logReading{}},
		{"torn last record", full[:len(full)-1], 0, []uint64{1, 2}, logReading{badEnd: true}},
		{"torn in a zero byte of a length", full[:third+3], 0, []uint64{1, 2}, logReading{}},
		{"last record damaged", flip(withEnd(full), third+logHeader), 0, []uint64{1, 2}, logReading{badEnd: true}},
		{"middle record damaged", flip(withEnd(full), second+logHeader), 0, []uint64{1, 3}, logReading{damaged: 1}},
		{"first record damaged", flip(withEnd(full), logFileHeader+logHeader), 0, []uint64{2, 3}, logReading{damaged: 1}},
		{"length beyond the data", flip(withEnd(full), third), 0, []uint64{1, 2}, logReading{badEnd: true}},
		{"zeros after the records", append(withEnd(full), make([]byte, 64)...), 0, []uint64{1, 2, 3}, logReading{}},
		{"older records after a reuse", append(withEnd(logWithSalt(otherSalt, 7, 8)), recordsOf(testSalt, 3, 4, 5)...), 0, []uint64{7, 8}, logReading{}},
		{"seq repeated", withEnd(logOf(1, 2, 2, 3)), 0, []uint64{1, 2, 3}, logReading{damaged: 1}},
		{"sealed", sealed, 0, []uint64{1, 2}, logReading{}},
		{"sealed, last record damaged", flip(sealed, second+logHeader), 0, []uint64{1}, logReading{damaged: 1, missing: 1}},
		{"seal damaged", flip(sealed, third+logHeader), 0, []uint64{1, 2}, logReading{badEnd: true}},
		{"record planted in a body", withPlanted, 0, []uint64{1, 2}, logReading{}},
		{"record planted in a damaged record's body", flip(withPlanted, logFileHeader+4), 0, []uint64{2}, logReading{damaged: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			records, read := readLog(tt.data, tt.after)
			if got := seqsOf(records); !slices.Equal(got, tt.want) {
				t.Errorf("readLog: got seqs %v, want %v", got, tt.want)
			}
			if read != tt.read {
				t.Errorf("readLog: got %+v, want %+v", read, tt.read)
			}
		})
	}
}

func TestReadLogValues(t *testing.T) {
	records, _ := readLog(logOf(4, 9), 0)
	if len(records) != 2 || string(records[0].value) != "v4" || string(records[1].value) != "v9" {
		t.Errorf("readLog values: got %v", records)
	}
}

// FuzzReadLog feeds readLog arbitrary file contents. It must not panic,
// and it must read back every record of a log it wrote, whatever follows
// them.
func FuzzReadLog(f *testing.F) {
	f.Add(logOf(1, 2, 3), []byte{})
	f.Add(logOf(5), recordsOf(testSalt, 1, 2))
	f.Add(logWithSalt([8]byte{}, 1), []byte{0xff})
	f.Fuzz(func(t *testing.T, data, tail []byte) {
		records, _ := readLog(data, 0)
		var last uint64
		for _, r := range records {
			if r.seq <= last {
				t.Fatalf("seq %d after %d", r.seq, last)
			}
			last = r.seq
		}

		// Written again and followed by any bytes, the records are read
		// back. The bytes after them may only add records.
		c := newRecordChecker(testSalt)
		rewritten := appendFileHeader(nil, testSalt)
		for _, r := range records {
			rewritten = c.appendRecord(rewritten, r.seq, r.value)
		}
		again, _ := readLog(append(rewritten, tail...), 0)
		if len(again) < len(records) {
			t.Fatalf("read back %d records, want at least %d", len(again), len(records))
		}
		for i, r := range records {
			if again[i].seq != r.seq || !bytes.Equal(again[i].value, r.value) {
				t.Fatalf("record %d: got seq %d %q, want seq %d %q", i, again[i].seq, again[i].value, r.seq, r.value)
			}
		}
	})
}

// crash stops b as a killed process would: no checkpoint, the files left
// as they are.
func crash(b *Bolt) {
	b.stopOnce.Do(func() {
		b.stopGoroutines()
		b.logMu.Lock()
		for _, lf := range append(append(b.retired, b.clean...), b.current) {
			if lf != nil {
				lf.f.Close()
			}
		}
		b.logClosed = true
		b.logMu.Unlock()
		b.db.Close()
	})
}

func openTestBolt(t *testing.T, dir string) *Bolt {
	t.Helper()
	return openTestBoltLogged(t, dir, nil)
}

// openObserved opens the spool in dir with a logger whose lines the
// returned observer keeps.
func openObserved(t *testing.T, dir string) (*Bolt, *observer.ObservedLogs) {
	t.Helper()
	core, observed := observer.New(zap.InfoLevel)
	return openTestBoltLogged(t, dir, zap.New(core)), observed
}

func openTestBoltLogged(t *testing.T, dir string, logger *zap.Logger) *Bolt {
	t.Helper()
	b, err := OpenBolt(dir, BoltOptions{MaxBytes: 1 << 30, MaxDeadLetters: 10, MaxDeadBytes: 1 << 20, DedupWindow: time.Hour, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// damageLog applies damage to the only log file in dir and returns its
// path.
func damageLog(t *testing.T, dir string, damage func(data []byte)) string {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, logNamePrefix+"*"))
	if len(logs) != 1 {
		t.Fatalf("log files: got %v, want one", logs)
	}
	data, err := os.ReadFile(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	damage(data)
	if err := os.WriteFile(logs[0], data, 0o600); err != nil {
		t.Fatal(err)
	}
	return logs[0]
}

// damageEntry changes the id in the logged payload of entry(key).
func damageEntry(t *testing.T, key string) func(data []byte) {
	return func(data []byte) {
		t.Helper()
		i := bytes.Index(data, []byte(`"id":"`+key+`"`))
		if i < 0 {
			t.Fatalf("entry %s not found in the log", key)
		}
		data[i+len(`"id":"`)] = 'x'
	}
}

func pendingKeys(t *testing.T, b *Bolt) []string {
	t.Helper()
	entries, err := b.Load(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	keys := keys(entries)
	slices.Sort(keys)
	return keys
}

// TestBoltRecoversFromLog appends, delivers and crashes across several
// log files, some reused: after a reopen exactly the undelivered entries
// are pending, and the delivered ones are still known to the dedup check.
func TestBoltRecoversFromLog(t *testing.T) {
	dir := t.TempDir()
	b := openTestBolt(t, dir)
	payload := bytes.Repeat([]byte("x"), 64<<10) // a log file holds about 64
	var want, done []string
	for round := range 8 {
		var seqs []uint64
		for i := range 40 {
			key := fmt.Sprintf("r%d-%02d", round, i)
			e := &Entry{Key: key, Payload: payload}
			mustAppend(t, b, e)
			if i%4 == 0 {
				want = append(want, key) // left pending
				continue
			}
			seqs = append(seqs, e.Seq)
			done = append(done, key)
		}
		if err := b.Done(seqs...); err != nil {
			t.Fatal(err)
		}
		if round == 3 {
			// Entries logged before this checkpoint go into the bbolt
			// file; the others stay only in the log.
			if err := b.checkpoint(b.lastLogged()); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 10 {
		// Only in the log at the crash.
		key := fmt.Sprintf("last-%d", i)
		mustAppend(t, b, &Entry{Key: key, Payload: payload})
		want = append(want, key)
	}
	b.logMu.Lock()
	files := len(b.retired) + len(b.clean)
	b.logMu.Unlock()
	if files == 0 {
		t.Fatal("no log file was retired: the test did not cover rotation and reuse")
	}
	crash(b)

	b, observed := openObserved(t, dir)
	defer b.Close()
	if warnings := observed.FilterMessageSnippet("damaged").All(); len(warnings) > 0 {
		t.Errorf("damage reported for logs that a crash left whole: %v", warnings[0].ContextMap())
	}
	slices.Sort(want)
	if got := pendingKeys(t, b); !slices.Equal(got, want) {
		t.Errorf("pending after the crash: got %v, want %v", got, want)
	}
	if st := b.Stats(); st.Pending != len(want) {
		t.Errorf("Stats().Pending after the crash: got %d, want %d", st.Pending, len(want))
	}
	for _, key := range []string{done[0], done[len(done)-1], want[len(want)-1]} {
		if err := b.Append(&Entry{Key: key, Payload: payload}); err != ErrDuplicate {
			t.Errorf("Append %s after the crash: got %v, want ErrDuplicate", key, err)
		}
	}
	logs, _ := filepath.Glob(filepath.Join(dir, logNamePrefix+"*"))
	if len(logs) != 0 {
		t.Errorf("log files after recovery: got %v, want none before the first Append", logs)
	}
}

// TestBoltDoneBeforeCheckpoint checks that an entry delivered while only
// in the log leaves no pending entry in the bbolt file, while its key does
// reach the dedup index.
func TestBoltDoneBeforeCheckpoint(t *testing.T) {
	b := openTestBolt(t, t.TempDir())
	defer b.Close()
	delivered, kept := entry("delivered"), entry("kept")
	mustAppend(t, b, delivered)
	mustAppend(t, b, kept)
	if err := b.Done(delivered.Seq); err != nil {
		t.Fatal(err)
	}
	if err := b.checkpoint(b.lastLogged()); err != nil {
		t.Fatal(err)
	}

	var pending []uint64
	var dedup []string
	b.db.View(func(tx *bolt.Tx) error {
		tx.Bucket(bucketPending).ForEach(func(k, _ []byte) error {
			pending = append(pending, binary.BigEndian.Uint64(k))
			return nil
		})
		tx.Bucket(bucketDedup).ForEach(func(k, _ []byte) error {
			dedup = append(dedup, string(k))
			return nil
		})
		return nil
	})

	if !slices.Equal(pending, []uint64{kept.Seq}) {
		t.Errorf("pending in the bbolt file: got %v, want only %d", pending, kept.Seq)
	}
	slices.Sort(dedup)
	if !slices.Equal(dedup, []string{"delivered", "kept"}) {
		t.Errorf("dedup keys in the bbolt file: got %v", dedup)
	}
	if st := b.Stats(); st.Pending != 1 || st.Bytes != int64(len(encodeEntry(kept))) {
		t.Errorf("Stats: got %+v, want 1 pending of %d bytes", st, len(encodeEntry(kept)))
	}
}

// TestBoltLoadSeesEveryEntry appends from several goroutines while a
// loader delivers in Seq order, checkpoints run and dead letters are
// replayed: every entry must be loaded exactly once, so no checkpoint or
// Replay may let the loader's cursor pass an entry it has not seen.
func TestBoltLoadSeesEveryEntry(t *testing.T) {
	b := openTestBolt(t, t.TempDir())
	defer b.Close()
	const writers, perWriter = 4, 300
	stop := make(chan struct{})
	var wg, bg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				if err := b.Append(&Entry{Key: fmt.Sprintf("%d-%d", w, i), Payload: []byte("p")}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	bg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := b.checkpoint(b.lastLogged()); err != nil {
				t.Error(err)
			}
			if _, err := b.Replay(); err != nil {
				t.Error(err)
			}
		}
	})

	seen := make(map[string]int)
	var cursor uint64
	total := writers * perWriter
	deadline := time.Now().Add(20 * time.Second)
	for len(seen) < total && time.Now().Before(deadline) {
		entries, err := b.Load(cursor, 50)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		var dls []DeadLetter
		for _, e := range entries {
			if e.Seq <= cursor {
				t.Fatalf("Load(%d) returned seq %d", cursor, e.Seq)
			}
			cursor = e.Seq
			seen[e.Key]++
			if seen[e.Key] == 1 && strings.HasSuffix(e.Key, "7") {
				// Dead-letter some, for the replay to append again.
				dls = append(dls, DeadLetter{Entry: *e, Stage: "test"})
				continue
			}
			seqs = append(seqs, e.Seq)
		}
		if err := b.Done(seqs...); err != nil {
			t.Fatal(err)
		}
		if len(dls) > 0 {
			if err := b.DeadLetter(dls...); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	if len(seen) != total {
		t.Fatalf("loaded %d distinct entries, want %d", len(seen), total)
	}
	for key, n := range seen {
		if want := 1 + strings.Count(key[len(key)-1:], "7"); n > want {
			t.Errorf("entry %s loaded %d times, want at most %d", key, n, want)
		}
	}
}

// TestBoltSurvivesKill runs a child process that appends and reports each
// Append that returned nil, kills it with SIGKILL, and checks that every
// reported entry is pending after a reopen.
func TestBoltSurvivesKill(t *testing.T) {
	if dir := os.Getenv("SPOOL_KILL_CHILD_DIR"); dir != "" {
		killChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBoltSurvivesKill$")
	cmd.Env = append(os.Environ(), "SPOOL_KILL_CHILD_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()

	var acked []string
	var pending []byte
	buf := make([]byte, 4096)
	for len(acked) < 3000 {
		n, err := out.Read(buf)
		pending = append(pending, buf[:n]...)
		for {
			line, rest, ok := bytes.Cut(pending, []byte("\n"))
			if !ok {
				break
			}
			acked = append(acked, string(line))
			pending = rest
		}
		if err != nil {
			t.Fatalf("child output ended after %d entries: %v", len(acked), err)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// Lines the child wrote before the kill count too.
	rest, _ := readAllLines(out)
	acked = append(acked, rest...)

	b := openTestBolt(t, dir)
	defer b.Close()
	got := make(map[string]bool)
	for _, key := range pendingKeys(t, b) {
		got[key] = true
	}
	delivered := make(map[string]bool)
	for _, line := range acked {
		if key, ok := strings.CutPrefix(line, "done "); ok {
			delivered[key] = true
		}
	}
	var lost []string
	for _, key := range acked {
		if strings.HasPrefix(key, "k") && !got[key] && !delivered[key] {
			lost = append(lost, key)
		}
	}
	t.Logf("child acknowledged %d entries before the kill; %d pending after reopen", len(acked), len(got))
	if len(lost) > 0 {
		t.Errorf("%d acknowledged entries lost, first %s", len(lost), lost[0])
	}
}

func readAllLines(r interface{ Read([]byte) (int, error) }) ([]string, error) {
	var data []byte
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		data = append(data, buf[:n]...)
		if err != nil {
			break
		}
	}
	var lines []string
	for line := range strings.SplitSeq(string(data), "\n") {
		if line != "" {
			lines = append(lines, line)
		}
	}
	return lines, nil
}

// killChild appends entries from several goroutines until it is killed,
// printing each key whose Append returned nil, and "done" and the key
// before it calls Done for an entry.
func killChild(dir string) {
	b, err := OpenBolt(dir, BoltOptions{MaxBytes: 1 << 30, MaxDeadLetters: 10, MaxDeadBytes: 1 << 20, DedupWindow: time.Hour})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				key := fmt.Sprintf("k%d-%d", w, i)
				if err := b.Append(&Entry{Key: key, Payload: bytes.Repeat([]byte("p"), 500)}); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Println(key)
				mu.Unlock()
			}
		})
	}
	// Deliver a little, so checkpoints and skipped writes happen too.
	go func() {
		var cursor uint64
		for {
			entries, _ := b.Load(cursor, 100)
			var seqs []uint64
			mu.Lock()
			for _, e := range entries {
				cursor = e.Seq
				if e.Seq%3 == 0 {
					seqs = append(seqs, e.Seq)
					fmt.Println("done", e.Key)
				}
			}
			mu.Unlock()
			b.Done(seqs...)
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
}

// TestBoltRecoversPastDamage damages one record in the middle of a log
// file: the records after it are recovered, and the damage is logged.
func TestBoltRecoversPastDamage(t *testing.T) {
	dir := t.TempDir()
	b := openTestBolt(t, dir)
	for _, key := range []string{"a", "b", "c", "d"} {
		mustAppend(t, b, entry(key))
	}
	crash(b)
	path := damageLog(t, dir, damageEntry(t, "b"))

	b, observed := openObserved(t, dir)
	defer b.Close()
	if got, want := pendingKeys(t, b), []string{"a", "c", "d"}; !slices.Equal(got, want) {
		t.Errorf("pending after recovery: got %v, want %v", got, want)
	}
	warnings := observed.FilterMessageSnippet("damaged").All()
	if len(warnings) != 1 {
		t.Fatalf("damage warnings: got %d, want 1", len(warnings))
	}
	kept, _ := filepath.Glob(filepath.Join(dir, damagedPrefix+"*-"+filepath.Base(path)))
	if len(kept) != 1 {
		t.Fatalf("damaged log files kept: got %v, want one", kept)
	}
	if got := warnings[0].ContextMap()["file"]; got != filepath.Base(kept[0]) {
		t.Errorf("damage warning's file: got %v, want %s", got, filepath.Base(kept[0]))
	}
}

// TestBoltSetsAsideUnreadableEntry damages one pending entry in the bbolt
// file: Load returns the others and moves it to the dead letters, so
// delivery goes on.
func TestBoltSetsAsideUnreadableEntry(t *testing.T) {
	b := openTestBolt(t, t.TempDir())
	defer b.Close()
	first, second, third := entry("a"), entry("b"), entry("c")
	for _, e := range []*Entry{first, second, third} {
		mustAppend(t, b, e)
	}
	if err := b.checkpoint(b.lastLogged()); err != nil {
		t.Fatal(err)
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPending).Put(seqKey(second.Seq), []byte{9, 9, 9})
	})
	if err != nil {
		t.Fatal(err)
	}

	got, err := b.Load(0, 10)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if keys := keys(got); !slices.Equal(keys, []string{"a", "c"}) {
		t.Errorf("Load: got %v, want a and c", keys)
	}
	dls, err := b.DeadLetters(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 {
		t.Fatalf("dead letters: got %d, want 1", len(dls))
	}
	if dls[0].Stage != "spool" || dls[0].Entry.Seq != second.Seq || !bytes.Equal(dls[0].Entry.Payload, []byte{9, 9, 9}) {
		t.Errorf("dead letter: got stage %q, seq %d, payload %x", dls[0].Stage, dls[0].Entry.Seq, dls[0].Entry.Payload)
	}
	if st := b.Stats(); st.Pending != 2 || st.DeadLetters != 1 {
		t.Errorf("Stats: got %+v, want 2 pending and 1 dead letter", st)
	}
	if again, _ := b.Load(0, 10); len(again) != 2 {
		t.Errorf("second Load: got %d entries, want 2", len(again))
	}
}

// TestBoltOpenDamagedFile damages the bbolt file in the ways a disk or a
// person might: OpenBolt must return an error that reports the damage, not
// panic or crash the process.
func TestBoltOpenDamagedFile(t *testing.T) {
	tests := []struct {
		name   string
		damage func(data []byte) []byte
	}{
		{"truncated to half", func(data []byte) []byte { return data[:len(data)/2] }},
		{"a page zeroed", func(data []byte) []byte {
			clear(data[3*4096 : 4*4096])
			return data
		}},
		{"pages overwritten", func(data []byte) []byte {
			for i := 8 * 4096; i < 18*4096 && i < len(data); i++ {
				data[i] = byte(i*7 + 3)
			}
			return data
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			b := openTestBolt(t, dir)
			payload := bytes.Repeat([]byte("p"), 300)
			for i := range 400 {
				mustAppend(t, b, &Entry{Key: fmt.Sprintf("key-%03d", i), Payload: payload})
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, FileName)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) < 20*4096 {
				t.Fatalf("spool file of %d bytes: too small to damage the pages the test names", len(data))
			}
			if err := os.WriteFile(path, tt.damage(data), 0o600); err != nil {
				t.Fatal(err)
			}

			b, err = OpenBolt(dir, BoltOptions{MaxBytes: 1 << 30})
			if err == nil {
				b.Close()
				t.Fatal("OpenBolt on a damaged file: got nil error")
			}
			if !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), "Move it out") {
				t.Errorf("OpenBolt error does not say the file is damaged and what to do: %v", err)
			}
		})
	}
}

// TestBoltProbeLog breaks the log's file and then its directory: Append
// and Probe must fail, and both must work again once the directory is back.
func TestBoltProbeLog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	b := openTestBolt(t, dir)
	defer b.Close()
	mustAppend(t, b, entry("a"))
	if err := b.Probe(); err != nil {
		t.Fatalf("Probe of a healthy spool: %v", err)
	}

	// The next write fails, and no new log file can be created: the
	// directory's path now names a file.
	b.logMu.Lock()
	b.current.f.Close()
	b.logMu.Unlock()
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(entry("b")); err == nil {
		t.Error("Append with a failing log: got nil error")
	}
	if err := b.Probe(); err == nil {
		t.Error("Probe with a failing log: got nil error")
	}

	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	if err := b.Probe(); err != nil {
		t.Errorf("Probe once the directory is back: %v", err)
	}
	mustAppend(t, b, entry("c"))
	if got := pendingKeys(t, b); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("pending: got %v, want a and c", got)
	}
}

// TestBoltLogNameTaken puts a directory where the next log file would go:
// the spool must use the next free name.
func TestBoltLogNameTaken(t *testing.T) {
	dir := t.TempDir()
	b := openTestBolt(t, dir)
	defer b.Close()
	for _, n := range []int{1, 2} {
		if err := os.Mkdir(filepath.Join(dir, logName(n)), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	mustAppend(t, b, entry("a"))
	if _, err := os.Stat(filepath.Join(dir, logName(3))); err != nil {
		t.Errorf("log file after two taken names: %v", err)
	}
}

// TestBoltCompactsSparseFile fills the bbolt file, delivers almost all of
// it and reopens: the file shrinks, and what was left (pending entries,
// dedup keys, dead letters, Seqs) is still there.
func TestBoltCompactsSparseFile(t *testing.T) {
	defer func(old int64) { compactMinFree = old }(compactMinFree)
	compactMinFree = 1 << 20
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	b := openTestBolt(t, dir)
	payload := bytes.Repeat([]byte("x"), 8<<10)
	var seqs []uint64
	var last *Entry
	for i := range 600 {
		last = &Entry{Key: fmt.Sprintf("k%03d", i), Payload: payload}
		mustAppend(t, b, last)
		seqs = append(seqs, last.Seq)
	}
	if err := b.checkpoint(b.lastLogged()); err != nil {
		t.Fatal(err)
	}
	if err := b.DeadLetter(DeadLetter{Entry: *last, Stage: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Done(seqs[1 : len(seqs)-1]...); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	b = openTestBolt(t, dir)
	defer b.Close()
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() > before.Size()/2 {
		t.Errorf("file size after reopening: got %d, want at most half of %d", after.Size(), before.Size())
	}
	if got := pendingKeys(t, b); !slices.Equal(got, []string{"k000"}) {
		t.Errorf("pending after compaction: got %v, want k000", got)
	}
	if dls, _ := b.DeadLetters(10); len(dls) != 1 || dls[0].Entry.Key != last.Key {
		t.Errorf("dead letters after compaction: got %v", deadLetterKeys(dls))
	}
	if err := b.Append(&Entry{Key: "k300", Payload: payload}); err != ErrDuplicate {
		t.Errorf("Append of a delivered key after compaction: got %v, want ErrDuplicate", err)
	}
	next := entry("new")
	mustAppend(t, b, next)
	if next.Seq <= last.Seq {
		t.Errorf("Seq after compaction: got %d, want above %d", next.Seq, last.Seq)
	}
	if _, err := os.Stat(path + compactSuffix); !os.IsNotExist(err) {
		t.Errorf("compaction copy left behind: %v", err)
	}
}

// TestBoltIgnoresPlantedRecord stores a webhook whose body holds a record
// made up by its sender, then damages the record before it so recovery
// scans through that body: the made-up record must not count.
func TestBoltIgnoresPlantedRecord(t *testing.T) {
	dir := t.TempDir()
	b := openTestBolt(t, dir)
	planted := recordsOf([8]byte{7, 7, 7, 7, 7, 7, 7, 7}, 1<<62)
	mustAppend(t, b, &Entry{Key: "forged", Query: true, Payload: planted})
	mustAppend(t, b, entry("after"))
	crash(b)
	damageLog(t, dir, func(data []byte) {
		data[logFileHeader+4] ^= 1 // the first record's seq
	})

	b = openTestBolt(t, dir)
	defer b.Close()
	if got := pendingKeys(t, b); !slices.Equal(got, []string{"after"}) {
		t.Errorf("pending after recovery: got %v, want only after", got)
	}
	next := entry("next")
	mustAppend(t, b, next)
	if next.Seq > 100 {
		t.Errorf("Seq after recovery: got %d, want a small one", next.Seq)
	}
}

func TestBoltRejectsTooLargeEntry(t *testing.T) {
	b := openTestBolt(t, t.TempDir())
	defer b.Close()
	if err := b.Append(&Entry{Key: "big", Payload: make([]byte, MaxEntryBytes)}); err != ErrTooLarge {
		t.Errorf("Append of %d bytes: got %v, want ErrTooLarge", MaxEntryBytes, err)
	}
	mustAppend(t, b, entry("small"))
}

// FuzzDecodeEntry feeds decodeEntry arbitrary bytes, as a damaged file
// would: it must not panic, and an entry it decodes must encode back to the
// same bytes when they are a whole entry.
func FuzzDecodeEntry(f *testing.F) {
	f.Add(encodeEntry(&Entry{Key: "k", Received: time.Unix(1, 0), Query: true, Payload: []byte("a=b"), Record: []byte("{}")}))
	f.Add(encodeEntry(&Entry{Payload: []byte(`{"name":"OPEN"}`)}))
	f.Add([]byte{entryVersion, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := decodeEntry(data, true)
		if err != nil {
			return
		}
		again, err := decodeEntry(encodeEntry(e), false)
		if err != nil {
			t.Fatalf("decoding an encoded entry: %v", err)
		}
		if again.Key != e.Key || again.Query != e.Query || !again.Received.Equal(e.Received) ||
			!bytes.Equal(again.Payload, e.Payload) || !bytes.Equal(again.Record, e.Record) {
			t.Fatalf("round trip: got %+v, want %+v", again, e)
		}
	})
}

// TestBoltReportsDamagedLastRecord damages the last record of the log file
// in use at a crash: the loss must be reported, and the file kept.
func TestBoltReportsDamagedLastRecord(t *testing.T) {
	dir := t.TempDir()
	b := openTestBolt(t, dir)
	for _, key := range []string{"a", "b", "c"} {
		mustAppend(t, b, entry(key))
	}
	crash(b)
	damageLog(t, dir, damageEntry(t, "c"))

	b, observed := openObserved(t, dir)
	defer b.Close()
	if got, want := pendingKeys(t, b), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("pending after recovery: got %v, want %v", got, want)
	}
	warnings := observed.FilterMessageSnippet("damaged").All()
	if len(warnings) != 1 {
		t.Fatalf("damage warnings: got %d, want 1", len(warnings))
	}
	if got := warnings[0].ContextMap()["bad_end"]; got != true {
		t.Errorf("damage warning's bad_end: got %v, want true", got)
	}
	if kept, _ := filepath.Glob(filepath.Join(dir, damagedPrefix+"*")); len(kept) != 1 {
		t.Errorf("damaged log files kept: got %v, want one", kept)
	}
}
