package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/branchmp/branchmp/internal/mptest"
)

// targetEventsPerSecond and targetCores are the delivery goal that the
// delivery table checks.
const (
	targetEventsPerSecond = 30000
	targetCores           = 1.0
)

// writeEnvironment prints what the numbers depend on.
func writeEnvironment(out io.Writer, o options) {
	fmt.Fprintf(out, "# branchmp load test\n\n")
	fmt.Fprintf(out, "- command: `loadtest %s`\n", strings.Join(o.args, " "))
	fmt.Fprintf(out, "- date: %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(out, "- machine: %d CPUs (%s), %s/%s, %s\n",
		runtime.NumCPU(), cpuModel(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Fprintf(out, "- the load generator and the Mixpanel stand-in share the machine with the server; CPU and RSS are the server process's own\n")
}

// cpuModel returns the first "model name" of /proc/cpuinfo, or "unknown".
func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(data)) {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimLeft(name, " \t:"))
		}
	}
	return "unknown"
}

// writeIntake prints the webhook side of each trial: what the load
// generator saw and what the server spent while the load ran.
func writeIntake(out io.Writer, results []trialResult) {
	fmt.Fprintf(out, "\n### Webhook intake\n\n")
	t := newTable("server", "load", "200/s", "vs bare", "200", "503", "other", "no response",
		"p50 ms", "p99 ms", "p99.9 ms", "max ms", "CPU s", "CPU ms per 1000 req", "peak RSS MiB")
	bare := bareRate(results)
	for _, r := range results {
		l := &r.load
		ok := l.statusCount(http.StatusOK)
		unavailable := l.statusCount(http.StatusServiceUnavailable)
		noAnswer := l.errors + l.notSent
		other := len(l.samples) - ok - unavailable - l.errors
		rate := float64(ok) / l.elapsed.Seconds()
		lat := latencies(l.samples)
		cpu := r.exit.AtStop.CPUSeconds - r.mark.CPUSeconds
		t.add(r.spec.label, loadLabel(r.spec.load), fmtFloat(rate, 0), ratio(rate, bare),
			fmtCount(ok), fmtCount(unavailable), fmtCount(other), fmtCount(noAnswer),
			fmtMillis(percentile(lat, 0.50)), fmtMillis(percentile(lat, 0.99)),
			fmtMillis(percentile(lat, 0.999)), fmtMillis(percentile(lat, 1)),
			fmtFloat(cpu, 2), perThousand(cpu, len(l.samples)), fmtMiB(r.exit.AtExit.MaxRSSKiB))
	}
	t.write(out)
	fmt.Fprintf(out, "\n200/s counts only 200 responses, over the time from the first send to the last response. "+
		"Latencies are of 200 responses. CPU is the server's user plus system time while the load ran; "+
		"for the bridge it includes the delivery that ran meanwhile. Peak RSS covers the whole process life, drain included.\n")
	writeNotes(out, results)
}

// writeNotes prints what may make a row misleading.
func writeNotes(out io.Writer, results []trialResult) {
	for _, r := range results {
		l := &r.load
		if l.firstError != "" {
			fmt.Fprintf(out, "\n- %s: %d requests got no response, the first failed with: %s\n", r.spec.label, l.errors, l.firstError)
		}
		if l.notSent > 0 {
			fmt.Fprintf(out, "\n- %s: %d scheduled requests were never sent, because every connection stayed busy\n", r.spec.label, l.notSent)
		}
		if l.maxWakeLag > 5*time.Millisecond {
			fmt.Fprintf(out, "\n- %s: the load generator woke up to %v late for a send, and the latencies include that delay\n",
				r.spec.label, l.maxWakeLag.Round(time.Millisecond))
		}
		if r.exit.ShutdownError != "" {
			fmt.Fprintf(out, "\n- %s: shutdown: %s\n", r.spec.label, r.exit.ShutdownError)
		}
		if n := r.counts.Canceled; n > 0 {
			fmt.Fprintf(out, "\n- %s: the server gave up on %d requests to the stand-in before their response, "+
				"for example after the bridge's 30 s Mixpanel timeout during a long hold\n", r.spec.label, n)
		}
	}
}

// writeDelivery prints what reached the stand-in, for every server that
// delivers.
func writeDelivery(out io.Writer, results []trialResult) {
	t := newTable("server", "accepted", "delivered", "lost", "extra", "dead-lettered", "delivered/s", "drain s",
		"CPU s", "CPU ms per 1000 events", "/import requests", "batch min / mean / max", batchHeader(), "profiles", "connections")
	rows := 0
	for _, r := range results {
		if r.spec.child.mode == "bare" {
			continue
		}
		rows++
		c := &r.counts
		deadLettered := "-"
		if r.exit.Stats != nil {
			deadLettered = fmtCount(int(r.exit.Stats.DeadLettered))
		}
		cpu := r.exit.AtExit.CPUSeconds - r.mark.CPUSeconds
		t.add(r.spec.label, fmtCount(r.accepted), fmtCount(c.DistinctIDs), fmtLost(r.lost), fmtCount(r.extra),
			deadLettered, rateSince(c.DistinctIDs, r.loadStart, c.LastImport), fmtFloat(r.exit.DrainSeconds, 2),
			fmtFloat(cpu, 2), perThousand(cpu, c.DistinctIDs), fmtCount(requestCount(c, "/import")),
			batchSummary(c.Batches), histogram(c.Batches), fmtCount(c.Profiles), fmtCount(c.Connections))
	}
	if rows == 0 {
		return
	}
	fmt.Fprintf(out, "\n### Delivery to the Mixpanel stand-in\n\n")
	t.write(out)
	fmt.Fprintf(out, "\nDelivered counts distinct $insert_id values that the stand-in imported. "+
		"Lost counts webhooks that got 200 but whose $insert_id never arrived, and it must be 0. "+
		"Extra counts delivered events whose webhook got no 200, such as after a client timeout. "+
		"Delivered/s runs from the start of the load to the last import. "+
		"Drain is the server's shutdown after the load, which waits for delivery. "+
		"CPU covers the load and the drain. Connections are the TCP connections the stand-in accepted.\n")
}

// writeFaults prints what happened to events around the stand-in's fault.
func writeFaults(out io.Writer, results []trialResult) {
	fmt.Fprintf(out, "\n### Events around the fault\n\n")
	t := newTable("server", "fault", "fault responses", "webhook 503s", "delivered by fault end", "delivered after",
		"retries", "dead-lettered", "lost", "backlog cleared after s", "peak RSS MiB")
	for _, r := range results {
		f := r.spec.fault
		faultEnd := r.loadStart.Add(f.after + f.dur)
		before, after := "-", "-"
		if r.atFaultEnd != nil {
			before = fmtCount(r.atFaultEnd.DistinctIDs)
			after = fmtCount(r.counts.DistinctIDs - r.atFaultEnd.DistinctIDs)
		}
		retries, deadLettered := "-", "-"
		if s := r.exit.Stats; s != nil {
			retries, deadLettered = fmtCount(int(s.Retries)), fmtCount(int(s.DeadLettered))
		}
		cleared := "-"
		if last := r.counts.LastImport; last.After(faultEnd) {
			cleared = fmtFloat(last.Sub(faultEnd).Seconds(), 2)
		}
		t.add(r.spec.label, fmt.Sprintf("%d from %v for %v", f.status, f.after, f.dur),
			fmtCount(faultAnswers(&r.counts, f.status)), fmtCount(r.load.statusCount(http.StatusServiceUnavailable)),
			before, after, retries, deadLettered, fmtLost(r.lost), cleared, fmtMiB(r.exit.AtExit.MaxRSSKiB))
	}
	t.write(out)
	fmt.Fprintf(out, "\nFault responses are the stand-in's 429 or 503 responses to /import and /engage. "+
		"Delivered by fault end and after split the distinct events at the moment the fault ended. "+
		"Backlog cleared is the time from the fault's end to the last import.\n")
}

// writeDrain prints the delivery scenario's table.
func writeDrain(out io.Writer, results []trialResult) {
	fmt.Fprintf(out, "\n### Delivery speed (drain of a full spool)\n\n")
	t := newTable("server", "GOMAXPROCS", "prefilled", "prefill s", "delivered", "lost", "held", "drain s", "events/s",
		"CPU s", "cores", "CPU ms per 1000 events", "batch min / mean / max", "/import requests", "peak RSS MiB",
		fmt.Sprintf("%d/s on %.0f core", targetEventsPerSecond, targetCores))
	for _, r := range results {
		c := &r.counts
		drained := c.DistinctIDs - c.HeldEvents
		drain := c.LastImport.Sub(r.release).Seconds()
		cpu := r.exit.AtExit.CPUSeconds - r.mark.CPUSeconds
		if r.delivered.CPUSeconds > 0 {
			cpu = r.delivered.CPUSeconds - r.mark.CPUSeconds
		}
		rate, cores := 0.0, 0.0
		if drain > 0 {
			rate, cores = float64(drained)/drain, cpu/drain
		}
		procs := "default"
		if r.spec.child.procs > 0 {
			procs = strconv.Itoa(r.spec.child.procs)
		}
		met := "no"
		if rate >= targetEventsPerSecond && cores <= targetCores {
			met = "yes"
		}
		t.add(r.spec.label, procs, fmtCount(r.accepted), fmtFloat(r.loadEnd.Sub(r.loadStart).Seconds(), 1),
			fmtCount(c.DistinctIDs), fmtLost(r.lost),
			fmtCount(c.HeldEvents), fmtFloat(drain, 2), fmtFloat(rate, 0), fmtFloat(cpu, 2), fmtFloat(cores, 2),
			perThousand(cpu, drained), batchSummary(c.Batches), fmtCount(requestCount(c, "/import")),
			fmtMiB(r.exit.AtExit.MaxRSSKiB), met)
	}
	t.write(out)
	fmt.Fprintf(out, "\nThe drain runs from the release of the held requests to the last /import response. "+
		"Held counts the events of the /import requests that the stand-in held at the release: "+
		"the bridge prepared them before, so events/s and CPU per event leave them out. "+
		"CPU runs from the release until the stand-in had every accepted event, a few milliseconds after the last import "+
		"(to the server's exit if that never happened). With -procs the server is also pinned to that many CPUs when taskset is installed. "+
		"Prefilled counts webhooks that got 200. A row with fewer than -prefill hit -duration or the queue limit.\n")
	writeNotes(out, results)
}

// bareRate returns the 200/s of the bare server, or 0 when it did not run.
func bareRate(results []trialResult) float64 {
	for _, r := range results {
		if r.spec.child.mode == "bare" {
			return float64(r.load.statusCount(http.StatusOK)) / r.load.elapsed.Seconds()
		}
	}
	return 0
}

func loadLabel(l loadSpec) string {
	if l.rate > 0 {
		return fmtFloat(l.rate, 0) + "/s"
	}
	return fmt.Sprintf("max, %d conns", l.conns)
}

func ratio(v, base float64) string {
	if base <= 0 {
		return "-"
	}
	return fmtFloat(v/base, 2) + "x"
}

func rateSince(n int, start, end time.Time) string {
	if end.IsZero() || !end.After(start) {
		return "-"
	}
	return fmtFloat(float64(n)/end.Sub(start).Seconds(), 0)
}

// perThousand returns CPU milliseconds per 1000 items.
func perThousand(cpuSeconds float64, n int) string {
	if n == 0 {
		return "-"
	}
	return fmtFloat(cpuSeconds*1e6/float64(n), 1)
}

func requestCount(c *mptest.Counts, path string) int {
	n := 0
	for _, count := range c.Requests[path] {
		n += count
	}
	return n
}

func faultAnswers(c *mptest.Counts, status int) int {
	return c.Requests["/import"][status] + c.Requests["/engage"][status]
}

func batchSummary(b mptest.BatchSizes) string {
	if b.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("%d / %s / %d", b.Min, fmtFloat(b.Mean(), 0), b.Max)
}

// batchHeader names the histogram's buckets, as in "≤1 / ≤10 / >1999".
func batchHeader() string {
	var parts []string
	for _, bound := range mptest.BatchBounds {
		parts = append(parts, "≤"+strconv.Itoa(bound))
	}
	last := mptest.BatchBounds[len(mptest.BatchBounds)-1]
	parts = append(parts, ">"+strconv.Itoa(last))
	return "batches " + strings.Join(parts, " / ")
}

func histogram(b mptest.BatchSizes) string {
	var parts []string
	for _, n := range b.Histogram {
		parts = append(parts, strconv.Itoa(n))
	}
	return strings.Join(parts, " / ")
}

// latencies returns the sorted latencies of 200 responses, in
// microseconds.
func latencies(samples []sample) []uint32 {
	var out []uint32
	for _, s := range samples {
		if s.status == http.StatusOK {
			out = append(out, s.latency)
		}
	}
	slices.Sort(out)
	return out
}

// percentile returns the nearest-rank percentile p (0 to 1) of sorted
// values, or -1 without values.
func percentile(sorted []uint32, p float64) int64 {
	if len(sorted) == 0 {
		return -1
	}
	rank := int(p*float64(len(sorted)) + 0.999999)
	rank = min(max(rank, 1), len(sorted))
	return int64(sorted[rank-1])
}

func fmtMillis(micros int64) string {
	if micros < 0 {
		return "-"
	}
	return fmtFloat(float64(micros)/1000, 2)
}

func fmtMiB(kib int64) string {
	return fmtFloat(float64(kib)/1024, 0)
}

func fmtFloat(v float64, decimals int) string {
	return strconv.FormatFloat(v, 'f', decimals, 64)
}

// fmtCount formats n with thousands separators.
func fmtCount(n int) string {
	s := strconv.Itoa(n)
	sign := ""
	if n < 0 {
		sign, s = "-", s[1:]
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return sign + s
}

// fmtLost formats a lost count; a negative count means the server does
// not deliver.
func fmtLost(n int) string {
	if n < 0 {
		return "-"
	}
	return fmtCount(n)
}

// table is a Markdown table with padded columns.
type table struct {
	header []string
	rows   [][]string
}

func newTable(header ...string) *table {
	return &table{header: header}
}

func (t *table) add(cells ...string) {
	t.rows = append(t.rows, cells)
}

func (t *table) write(out io.Writer) {
	widths := make([]int, len(t.header))
	for _, row := range append([][]string{t.header}, t.rows...) {
		for i, cell := range row {
			widths[i] = max(widths[i], len([]rune(cell)))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, cell := range cells {
			b.WriteString(" " + cell + strings.Repeat(" ", widths[i]-len([]rune(cell))) + " |")
		}
		fmt.Fprintln(out, b.String())
	}
	line(t.header)
	rule := make([]string, len(widths))
	for i, w := range widths {
		rule[i] = strings.Repeat("-", w)
	}
	line(rule)
	for _, row := range t.rows {
		line(row)
	}
}
