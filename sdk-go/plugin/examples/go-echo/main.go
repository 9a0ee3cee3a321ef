// go-echo is an example shared task written in Go: it prints its settings and its environment
// (sorted), then exits with the setting `exit_code` (default 0). With `sleep` (a Go duration) it
// waits that long first, and stops early when the task is cancelled.
//
// It also shows a plugin's own API identity: with `save_object` it stores what it printed as one
// of its own objects (GET /api/extensions/go-echo/objects/KEY), and with `api_get` it prints
// what the API answers it for a path (e.g. 403 for another plugin's objects or a secret).
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
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
			{Key: "save_object", Documentation: "Store what was printed as this plugin's object with this key."},
			{Key: "api_get", Documentation: `Print what Gofer's API answers this plugin for a path, e.g. "/api/extensions/go-echo/objects".`},
		},
	}
}

func (echo) Run(ctx context.Context, request plugin.RunRequest) (int, error) {
	var printed bytes.Buffer
	out := io.MultiWriter(request.Stdout, &printed)
	for _, key := range plugin.SortedKeys(request.Settings) {
		fmt.Fprintf(out, "setting %s=%s\n", key, request.Settings[key])
	}
	for _, key := range plugin.SortedKeys(request.Env) {
		fmt.Fprintf(out, "env %s=%s\n", key, request.Env[key])
	}
	if err := useAPI(ctx, request, printed.Bytes()); err != nil {
		return 0, err
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

// useAPI does what `save_object` and `api_get` ask, with the plugin's own token.
func useAPI(ctx context.Context, request plugin.RunRequest, printed []byte) error {
	key, save := request.Settings["save_object"]
	path, get := request.Settings["api_get"]
	if !save && !get {
		return nil
	}
	api, err := plugin.NewAPI()
	if err != nil {
		return err
	}
	if save {
		if err := api.PutObject(ctx, "go-echo", key, printed); err != nil {
			return fmt.Errorf("saving object %q: %w", key, err)
		}
		fmt.Fprintf(request.Stdout, "saved object %s (%d bytes)\n", key, len(printed))
	}
	if get {
		body, err := api.Do(ctx, http.MethodGet, path, nil)
		var refused *plugin.APIError
		switch {
		case errors.As(err, &refused):
			fmt.Fprintf(request.Stdout, "api GET %s: %d %s\n", path, refused.Status, refused.Message)
		case err != nil:
			return fmt.Errorf("GET %s: %w", path, err)
		default:
			fmt.Fprintf(request.Stdout, "api GET %s: 200 %s\n", path, bytes.TrimSpace(body))
		}
	}
	return nil
}

func main() {
	plugin.Serve(echo{})
}
