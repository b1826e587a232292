package main

import (
	"fmt"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// readUsage returns this process's CPU time, user plus system, and its
// peak RSS so far. Linux reports Maxrss in KiB.
func readUsage() usage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return usage{}
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return usage{CPUSeconds: cpu.Seconds(), MaxRSSKiB: ru.Maxrss}
}

// setParentDeathSignal makes the kernel kill the child when the parent
// dies without stopping it, so that no server outlives an interrupted run.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// pinned returns the command line that runs name with args on the last
// procs CPUs, through taskset, so the process cannot use more than procs
// cores even with threads in system calls. It returns false when taskset
// is missing or procs leaves no CPU out.
func pinned(procs int, name string, args []string) ([]string, bool) {
	n := runtime.NumCPU()
	taskset, err := exec.LookPath("taskset")
	if err != nil || procs <= 0 || procs >= n {
		return nil, false
	}
	cpus := fmt.Sprintf("%d-%d", n-procs, n-1)
	return append([]string{taskset, "-c", cpus, name}, args...), true
}

// markSignal makes the child print its CPU time so far.
var markSignal = syscall.SIGUSR1
