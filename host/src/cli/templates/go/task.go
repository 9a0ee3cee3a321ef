// {{name}} is a Gofer shared task: it greets `who` (a setting; default "world"), says which run
// of which pipeline it is in, and exits with `exit_code` (default 0). Start here: replace Run with
// the task's work.
package main

import (
	"context"
	"fmt"
	"strconv"

	"gofer.dev/sdk/plugin"
)

type task struct{}

func (task) Info() plugin.Info {
	return plugin.Info{
		Name:        "{{name}}",
		Version:     "0.1.0",
		Description: "Greets.",
		Settings: []plugin.Parameter{
			{Key: "who", Documentation: `Whom to greet; default "world".`},
			{Key: "exit_code", Documentation: "The exit code to end with, 0 to 255; default 0."},
		},
	}
}

// Run's output is the task's log; ctx ends when the task is cancelled or passes its deadline.
func (task) Run(ctx context.Context, request plugin.RunRequest) (int, error) {
	for key := range request.Settings {
		if key != "who" && key != "exit_code" {
			return 0, fmt.Errorf("unknown setting '%s'; {{name}} takes 'who' and 'exit_code'", key)
		}
	}
	code := 0
	if value, ok := request.Settings["exit_code"]; ok {
		parsed, err := strconv.Atoi(value)
		if err != nil || parsed < 0 || parsed > 255 {
			return 0, fmt.Errorf("'exit_code' must be 0 to 255, got '%s'", value)
		}
		code = parsed
	}
	who := request.Settings["who"]
	if who == "" {
		who = "world"
	}
	fmt.Fprintf(request.Stdout, "hello %s, from run %s of %s\n", who, request.Env["GOFER_RUN_ID"], request.Env["GOFER_PIPELINE_ID"])
	return code, ctx.Err()
}

func main() {
	plugin.Serve(task{})
}
