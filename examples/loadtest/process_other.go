//go:build !linux

package main

import (
	"os"
	"os/exec"
)

// readUsage returns zero: parseOptions rejects other systems before any
// child starts.
func readUsage() usage { return usage{} }

func setParentDeathSignal(*exec.Cmd) {}

var markSignal = os.Interrupt
