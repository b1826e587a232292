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

func pinned(int, string, []string) ([]string, bool) { return nil, false }

var markSignal = os.Interrupt
