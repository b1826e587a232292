package main

import (
	"os/exec"
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

// markSignal makes the child print its CPU time so far.
var markSignal = syscall.SIGUSR1
