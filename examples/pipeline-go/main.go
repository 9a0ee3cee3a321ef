// A pipeline written in Go: `gofer pipeline create examples/pipeline-go --deploy` builds and
// runs this program and registers the JSON it prints. examples/pipeline-rust is the same
// pipeline in Rust, and examples/sdk-example.json the same pipeline as plain JSON.
package main

import (
	"log"
	"time"

	"gofer.dev/sdk/config"
)

func main() {
	err := config.NewPipeline("sdk-example", "SDK example").
		Description("Greets, then reports; written with a Gofer SDK.").
		Timeout(5*time.Minute).
		Triggers(config.NewTrigger("interval", "hourly").Setting("every", "1h")).
		Tasks(
			config.NewTask("greet", "gofer-busybox:local").
				Description("Says hello").
				Variable("WHO", "gofer").
				Script(`echo "hello from $WHO"`).
				Retries(1),
			config.NewSharedTask("report", "debug").
				Setting("note", "greeted").
				DependsOn("greet", config.RequiredParentStatusSuccess),
		).
		Finish()
	if err != nil {
		log.Fatal(err)
	}
}
