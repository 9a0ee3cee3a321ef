// go-echo is an example shared task written in Go: it prints its settings and its environment
// (sorted), then exits with the setting `exit_code` (default 0). With `sleep` (a Go duration) it
// waits that long first, and stops early when the task is cancelled.
package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"gofer.dev/sdk/plugin"
)

type echo struct{}

func (echo) Info() plugin.Info {
	return plugin.Info{
		Name:        "go-echo",
		Version:     "0.1.0",
		Description: "Prints its settings and environment (an example Go shared task).",
		Settings: []plugin.Parameter{
			{Key: "exit_code", Documentation: "Exit code to end with (0 to 255); default 0."},
			{Key: "sleep", Documentation: `How long to wait before exiting, e.g. "2s"; default none.`},
		},
	}
}

func (echo) Run(ctx context.Context, request plugin.RunRequest) (int, error) {
	for _, key := range plugin.SortedKeys(request.Settings) {
		fmt.Fprintf(request.Stdout, "setting %s=%s\n", key, request.Settings[key])
	}
	for _, key := range plugin.SortedKeys(request.Env) {
		fmt.Fprintf(request.Stdout, "env %s=%s\n", key, request.Env[key])
	}
	if value, ok := request.Settings["sleep"]; ok {
		pause, err := time.ParseDuration(value)
		if err != nil {
			return 0, fmt.Errorf("the setting 'sleep' is not a duration: %q", value)
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			fmt.Fprintln(request.Stderr, "cancelled")
			return 0, ctx.Err()
		}
	}
	code := 0
	if value, ok := request.Settings["exit_code"]; ok {
		parsed, err := strconv.Atoi(value)
		if err != nil || parsed < 0 || parsed > 255 {
			return 0, fmt.Errorf("the setting 'exit_code' must be a number from 0 to 255, got %q", value)
		}
		code = parsed
	}
	fmt.Fprintf(request.Stderr, "go-echo done, exit code %d\n", code)
	return code, nil
}

func main() {
	plugin.Serve(echo{})
}
