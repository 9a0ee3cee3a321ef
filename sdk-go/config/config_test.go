package config

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func mustFail(t *testing.T, pipeline *PipelineWrapper, want string) {
	t.Helper()
	err := pipeline.Validate()
	if err == nil {
		t.Fatalf("expected an error containing %q, got none", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("expected an error containing %q, got %q", want, err)
	}
}

func TestValidation(t *testing.T) {
	task := func(id string) *TaskWrapper { return NewTask(id, "busybox") }
	mustFail(t, NewPipeline("no", "x").Tasks(task("aaa")), "invalid pipeline id 'no': length cannot be less than 3")
	mustFail(t, NewPipeline("my_pipeline", "x").Tasks(task("aaa")), "alphanumeric and hyphen")
	mustFail(t, NewPipeline("empty", "x"), "has no tasks")
	mustFail(t, NewPipeline("dupes", "x").Tasks(task("aaa"), task("aaa")), "task 'aaa' is defined more than once")
	mustFail(t, NewPipeline("unknown", "x").Tasks(task("aaa").DependsOn("ghost", RequiredParentStatusAny)),
		"task 'aaa' depends on 'ghost', which is not a task of this pipeline")
	mustFail(t, NewPipeline("cycle", "x").Tasks(
		task("aaa").DependsOn("ccc", RequiredParentStatusAny),
		task("bbb").DependsOn("aaa", RequiredParentStatusSuccess),
		task("ccc").DependsOn("bbb", RequiredParentStatusFailure),
	), "the tasks form a cycle: aaa -> ccc -> bbb -> aaa")
	mustFail(t, NewPipeline("self", "x").Tasks(task("aaa").DependsOn("aaa", RequiredParentStatusAny)), "cycle: aaa -> aaa")
	mustFail(t, NewPipeline("status", "x").Tasks(task("aaa"), task("bbb").DependsOn("aaa", "Unknown")), "with status 'Unknown'")
	mustFail(t, NewPipeline("noimage", "x").Tasks(NewTask("aaa", "")), "task 'aaa' has no image")
	mustFail(t, NewPipeline("both", "x").Tasks(NewSharedTask("aaa", "debug").AlwaysPullNewestImage(false).withImage("busybox")), "both an image and a plugin")
	mustFail(t, NewPipeline("retries", "x").Tasks(task("aaa").Retries(11)), "at most 10 are allowed")
	mustFail(t, NewPipeline("triggers", "x").Tasks(task("aaa")).Triggers(NewTrigger("interval", "hourly"), NewTrigger("interval", "hourly")),
		"trigger 'hourly' of plugin 'interval' is declared more than once")

	ok := NewPipeline("fine", "Fine").Tasks(task("aaa"), task("bbb").DependsOn("aaa", RequiredParentStatusAny))
	if err := ok.Validate(); err != nil {
		t.Fatalf("a valid pipeline was refused: %v", err)
	}
}

func (t *TaskWrapper) withImage(image string) *TaskWrapper {
	t.Task.Image = image
	return t
}

// The JSON of a pipeline using only v0 features is what Gofer v0's Go SDK printed.
func TestV0JSON(t *testing.T) {
	pipeline := NewPipeline("dag", "Dag Test Pipeline").Description("a dag").Tasks(
		NewTask("first-task", "busybox").Variables(map[string]string{"WAIT_DURATION": "20s"}).AlwaysPullNewestImage(true),
		NewTask("depends-on-first", "busybox").DependsOn("first-task", RequiredParentStatusSuccess).
			Variable("TOKEN", PipelineSecret("token")).Script("  echo hi \n"),
	)
	output, err := json.Marshal(pipeline.Pipeline)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"dag","name":"Dag Test Pipeline","description":"a dag","parallelism":0,"tasks":[` +
		`{"id":"first-task","description":"","image":"busybox","registry_auth":null,"depends_on":{},"variables":{"WAIT_DURATION":"20s"},"entrypoint":null,"command":null,"inject_api_token":false,"always_pull_newest_image":true},` +
		`{"id":"depends-on-first","description":"","image":"busybox","registry_auth":null,"depends_on":{"first-task":"Success"},"variables":{"TOKEN":"pipeline_secret{{token}}"},"entrypoint":null,"command":["/bin/sh","-c","echo hi"],"inject_api_token":false,"always_pull_newest_image":false}]}`
	if string(output) != want {
		t.Fatalf("got\n%s\nwant\n%s", output, want)
	}
}

func TestGoferAdditions(t *testing.T) {
	pipeline := NewPipeline("extras", "Extras").Timeout(30*time.Minute).KeepFailed(time.Hour).
		Triggers(NewTrigger("interval", "hourly").Setting("every", "1h")).Placement("node.role == worker").
		Tasks(NewSharedTask("call", "http-request").Setting("url", "http://example.com").
			Timeout(1500*time.Millisecond).Retries(2),
			NewTask("build", "busybox").KeepFailed(10*time.Minute).CPUs(0.5).Memory("256m").Workspace().Placement("node.labels.gpu == true"))
	output, err := json.Marshal(pipeline.Pipeline)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"timeout":"1800s","keep_failed":"3600s"`, `"keep_failed":"600s","resources":{"cpus":0.5,"memory":"256m"},"workspace":true,"placement":["node.labels.gpu == true"]`, `"placement":["node.role == worker"]}`, `"triggers":[{"plugin":"interval","id":"hourly","settings":{"every":"1h"}}]`,
		`"plugin":"http-request","settings":{"url":"http://example.com"},"timeout":"1500ms","retries":2`,
	} {
		if !strings.Contains(string(output), want) {
			t.Fatalf("%s is missing from %s", want, output)
		}
	}
	if strings.Contains(string(output), `"id":"call","description":"","image"`) {
		t.Fatalf("a shared task has no image: %s", output)
	}
	if err := pipeline.Validate(); err != nil {
		t.Fatal(err)
	}
}
