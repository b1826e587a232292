package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// startTimeout bounds how long a child may take to print its address.
const startTimeout = 15 * time.Second

// killTimeout bounds the wait for a killed child to exit.
const killTimeout = 10 * time.Second

// child is a running server under test. Its stdout carries JSON lines
// (childLine); its stderr goes to the parent's.
type child struct {
	cmd    *exec.Cmd
	url    string         // base URL, http://127.0.0.1:PORT
	lines  chan childLine // closed at the end of stdout
	exited chan struct{}  // closed when the process has been waited for
	// readErr is the first undecodable line or read error, set before
	// lines is closed.
	readErr error
}

// childSpec is the command line of a child.
type childSpec struct {
	mode        string
	mixpanelURL string
	workers     int
	queue       int
	queueMiB    int
	spoolDir    string
	procs       int // GOMAXPROCS; 0 leaves Go's default
	// retryBackoff is the bridge's RetryBackoff; 0 keeps its default.
	retryBackoff time.Duration
	cpuProfile   string // file for a CPU profile, or empty for none
}

// startChild starts the server and waits for its address.
func startChild(ctx context.Context, o options, spec childSpec) (*child, error) {
	args := []string{serveCommand,
		"-mode", spec.mode,
		"-mixpanel", spec.mixpanelURL,
		"-workers", strconv.Itoa(spec.workers),
		"-queue", strconv.Itoa(spec.queue),
		"-queue-mib", strconv.Itoa(spec.queueMiB),
		"-spool-dir", spec.spoolDir,
		"-retry-backoff", spec.retryBackoff.String(),
		"-cpuprofile", spec.cpuProfile,
		"-drain-timeout", o.drainTimeout.String(),
		// The child stops by itself well after the parent's own bounds.
		"-max-lifetime", (o.duration + o.drainTimeout + maxFaultEnd).String(),
	}
	if o.verbose {
		args = append(args, "-v")
	}
	cmd := exec.Command(o.executable, args...)
	if line, ok := pinned(spec.procs, o.executable, args); ok {
		// taskset runs the server in its own process, so the child's PID
		// and resource usage are the server's.
		cmd = exec.Command(line[0], line[1:]...)
	}
	cmd.Env = os.Environ()
	if spec.procs > 0 {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(spec.procs))
	}
	cmd.Stderr = o.stderr
	setParentDeathSignal(cmd)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s server: %w", spec.mode, err)
	}

	c := &child{cmd: cmd, lines: make(chan childLine, 8), exited: make(chan struct{})}
	go c.read(stdout)
	line, err := c.next(ctx, startTimeout)
	if err == nil && line.Addr == "" {
		err = errors.New("its first line has no address")
	}
	if err != nil {
		c.kill()
		return nil, fmt.Errorf("%s server did not start: %w", spec.mode, err)
	}
	c.url = "http://" + line.Addr
	return c, nil
}

// read decodes stdout until it ends, then waits for the process. It is
// the only caller of cmd.Wait, which must come after the last read.
func (c *child) read(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var line childLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			if c.readErr == nil {
				c.readErr = fmt.Errorf("undecodable line %q: %w", sc.Text(), err)
			}
			continue
		}
		c.lines <- line
	}
	if err := sc.Err(); err != nil && c.readErr == nil {
		c.readErr = err
	}
	close(c.lines)
	c.cmd.Wait()
	close(c.exited)
}

// next returns the child's next line, waiting at most timeout.
func (c *child) next(ctx context.Context, timeout time.Duration) (childLine, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case line, ok := <-c.lines:
		if !ok {
			return childLine{}, c.endError()
		}
		return line, nil
	case <-timer.C:
		return childLine{}, fmt.Errorf("no output within %v", timeout)
	case <-ctx.Done():
		return childLine{}, ctx.Err()
	}
}

// endError describes why stdout ended early.
func (c *child) endError() error {
	if c.readErr != nil {
		return c.readErr
	}
	<-c.exited
	return fmt.Errorf("the process exited (%v)", c.cmd.ProcessState)
}

// mark returns the child's resource use so far.
func (c *child) mark(ctx context.Context) (usage, error) {
	if err := c.cmd.Process.Signal(markSignal); err != nil {
		return usage{}, err
	}
	line, err := c.next(ctx, startTimeout)
	if err != nil {
		return usage{}, fmt.Errorf("mark: %w", err)
	}
	if line.Mark == nil {
		return usage{}, errors.New("mark: the child printed another line")
	}
	return *line.Mark, nil
}

// stop sends SIGTERM and returns the exit report, printed once the child
// has drained. It waits at most timeout, then kills the child.
func (c *child) stop(ctx context.Context, timeout time.Duration) (exitReport, error) {
	defer c.kill()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return exitReport{}, err
	}
	line, err := c.next(ctx, timeout)
	if err != nil {
		return exitReport{}, fmt.Errorf("stop: %w", err)
	}
	if line.Exit == nil {
		return exitReport{}, errors.New("stop: the child printed another line")
	}
	select {
	case <-c.exited:
	case <-time.After(killTimeout):
	}
	return *line.Exit, nil
}

// kill ends the child if it is still running and waits for it.
func (c *child) kill() {
	select {
	case <-c.exited:
		return
	default:
	}
	c.cmd.Process.Kill()
	select {
	case <-c.exited:
	case <-time.After(killTimeout):
		fmt.Fprintf(os.Stderr, "loadtest: child %d did not exit within %v of SIGKILL\n", c.cmd.Process.Pid, killTimeout)
	}
}
