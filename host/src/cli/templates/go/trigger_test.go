package main

import (
	"strings"
	"testing"
	"time"
)

func TestFiresOnItsPeriodUntilUnsubscribed(t *testing.T) {
	trigger := newTrigger()
	keys := make(chan string, 10)
	err := trigger.SubscribeKeyed("s", map[string]string{"every": "1s"}, func(variables map[string]string, key string) {
		if variables["{{env}}_DUE"] == "" {
			t.Errorf("a fire without {{env}}_DUE: %v", variables)
		}
		keys <- key
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case key := <-keys:
		if !strings.HasPrefix(key, "s@") {
			t.Errorf("idempotency key %q does not name the subscription", key)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no fire within 3s of a 1s period")
	}
	trigger.Unsubscribe("s")
	time.Sleep(1500 * time.Millisecond)
	for len(keys) > 0 {
		<-keys
	}
	time.Sleep(1200 * time.Millisecond)
	if len(keys) != 0 {
		t.Errorf("fired after Unsubscribe")
	}
}

func TestBadSettingsAreRefusedWithAReason(t *testing.T) {
	trigger := newTrigger()
	for settings, want := range map[string]string{
		"":      "required",
		"soon":  "not a duration",
		"500ms": "at least 1s",
	} {
		err := trigger.SubscribeKeyed("s", map[string]string{"every": settings}, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("every=%q: got %v, want an error saying %q", settings, err, want)
		}
	}
	err := trigger.SubscribeKeyed("s", map[string]string{"every": "1s", "evry": "2s"}, nil)
	if err == nil || !strings.Contains(err.Error(), "unknown setting 'evry'") {
		t.Errorf("got %v", err)
	}
}
