package caddymodule

import (
	"bytes"
	"testing"

	"github.com/spf13/cobra"
)

// RunCLI runs `caddy aitoken args...` in-process and returns its output.
func RunCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := &cobra.Command{Use: "aitoken"}
	buildCLI(cmd)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}
