// go-ticker is an example trigger written in Go: it starts a run of each subscribed pipeline
// every `every` (a Go duration such as "30s", "5m" or "1h30m"; at least 1s), like the built-in
// `interval` plugin. Each run gets GOFER_TRIGGER_TIME (RFC 3339) and GOFER_TRIGGER_TICK (1, 2...).
package main

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"gofer.dev/sdk/plugin"
)

type ticker struct {
	mu      sync.Mutex
	running map[string]chan struct{}
}

func (t *ticker) Info() plugin.Info {
	return plugin.Info{
		Name:        "go-ticker",
		Version:     "0.1.0",
		Description: "Starts a run of the pipeline at a fixed interval (an example Go plugin).",
		Settings: []plugin.Parameter{{
			Key:           "every",
			Required:      true,
			Documentation: `How often to start a run: a duration such as "30s", "5m" or "1h30m"; at least 1s.`,
		}},
	}
}

func (t *ticker) Subscribe(subscription string, settings map[string]string, fire plugin.FireFunc) error {
	every, err := parseEvery(settings["every"])
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	t.mu.Lock()
	if old, ok := t.running[subscription]; ok {
		close(old)
	}
	t.running[subscription] = stop
	t.mu.Unlock()
	go func() {
		clock := time.NewTicker(every)
		defer clock.Stop()
		for tick := 1; ; tick++ {
			select {
			case <-stop:
				return
			case now := <-clock.C:
				fire(map[string]string{
					"GOFER_TRIGGER_TIME": now.UTC().Format(time.RFC3339),
					"GOFER_TRIGGER_TICK": strconv.Itoa(tick),
				})
			}
		}
	}()
	return nil
}

func (t *ticker) Unsubscribe(subscription string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if stop, ok := t.running[subscription]; ok {
		close(stop)
		delete(t.running, subscription)
	}
}

func parseEvery(value string) (time.Duration, error) {
	if value == "" {
		return 0, fmt.Errorf(`the setting 'every' is required; use e.g. "30s", "5m" or "1h"`)
	}
	every, err := time.ParseDuration(value)
	if err != nil {
		return 0, fmt.Errorf(`the setting 'every' is not a duration: %q; use e.g. "30s", "5m" or "1h"`, value)
	}
	if every < time.Second {
		return 0, fmt.Errorf("the setting 'every' must be at least 1s, got %s", value)
	}
	return every, nil
}

func main() {
	plugin.Serve(&ticker{running: map[string]chan struct{}{}})
}
