package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"gofer.dev/sdk/plugin"
)

func run(settings map[string]string) (string, int, error) {
	var out bytes.Buffer
	code, err := task{}.Run(context.Background(), plugin.RunRequest{
		Settings: settings,
		Env:      map[string]string{"GOFER_PIPELINE_ID": "nightly", "GOFER_RUN_ID": "7"},
		Stdout:   &out,
		Stderr:   &out,
	})
	return out.String(), code, err
}

func TestGreets(t *testing.T) {
	out, code, err := run(map[string]string{"who": "team"})
	if err != nil || code != 0 || out != "hello team, from run 7 of nightly\n" {
		t.Errorf("got %q, %d, %v", out, code, err)
	}
}

func TestEndsWithItsExitCode(t *testing.T) {
	if _, code, err := run(map[string]string{"exit_code": "3"}); code != 3 || err != nil {
		t.Errorf("got %d, %v", code, err)
	}
	if _, _, err := run(map[string]string{"exit_code": "300"}); err == nil || !strings.Contains(err.Error(), "0 to 255") {
		t.Errorf("got %v", err)
	}
	if _, _, err := run(map[string]string{"whom": "x"}); err == nil || !strings.Contains(err.Error(), "unknown setting 'whom'") {
		t.Errorf("got %v", err)
	}
}
