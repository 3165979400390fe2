//go:build !linux

package caddymodule_test

import "syscall"

func stripeMockProcAttr() *syscall.SysProcAttr { return nil }
