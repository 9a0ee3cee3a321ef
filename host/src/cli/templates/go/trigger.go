// {{name}} is a Gofer trigger: each subscription starts a run every `every` (a Go duration such
// as "30s" or "5m"; at least 1s); each run gets {{env}}_DUE, the time it was due (RFC 3339).
// Start here: change what it watches and when it fires.
package main

import (
	"fmt"
	"sync"
	"time"

	"gofer.dev/sdk/plugin"
)

type trigger struct {
	mu      sync.Mutex
	running map[string]chan struct{}
}

func newTrigger() *trigger {
	return &trigger{running: map[string]chan struct{}{}}
}

func (t *trigger) Info() plugin.Info {
	return plugin.Info{
		Name:        "{{name}}",
		Version:     "0.1.0",
		Description: "Starts a run every `every`.",
		Settings: []plugin.Parameter{{
			Key:           "every",
			Required:      true,
			Documentation: `How often to start a run, e.g. "30s" or "5m"; at least 1s.`,
		}},
	}
}

// SubscribeKeyed starts a ticker; each fire has an idempotency key (the subscription and the due
// time), so a fire sent twice starts one run.
func (t *trigger) SubscribeKeyed(subscription string, settings map[string]string, fire plugin.KeyedFireFunc) error {
	for key := range settings {
		if key != "every" {
			return fmt.Errorf("unknown setting '%s'; {{name}} takes 'every'", key)
		}
	}
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
		for {
			select {
			case <-stop:
				return
			case due := <-clock.C:
				at := due.UTC().Format(time.RFC3339Nano)
				fire(map[string]string{"{{env}}_DUE": at}, subscription+"@"+at)
			}
		}
	}()
	return nil
}

// Subscribe is SubscribeKeyed without keys (the SDK calls SubscribeKeyed when it is there).
func (t *trigger) Subscribe(subscription string, settings map[string]string, fire plugin.FireFunc) error {
	return t.SubscribeKeyed(subscription, settings, func(variables map[string]string, _ string) { fire(variables) })
}

func (t *trigger) Unsubscribe(subscription string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if stop, ok := t.running[subscription]; ok {
		close(stop)
		delete(t.running, subscription)
	}
}

func parseEvery(value string) (time.Duration, error) {
	if value == "" {
		return 0, fmt.Errorf(`the setting 'every' is required; use e.g. "30s" or "5m"`)
	}
	every, err := time.ParseDuration(value)
	if err != nil {
		return 0, fmt.Errorf(`the setting 'every' is not a duration: %q; use e.g. "30s" or "5m"`, value)
	}
	if every < time.Second {
		return 0, fmt.Errorf("the setting 'every' must be at least 1s, got %s", value)
	}
	return every, nil
}

func main() {
	plugin.Serve(newTrigger())
}
