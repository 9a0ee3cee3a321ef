// Package config describes Gofer pipelines in Go. A pipeline program builds a pipeline, and
// Finish validates it and prints it as JSON, which `gofer pipeline create PATH` registers:
//
//	func main() {
//		err := config.NewPipeline("my-pipeline", "My pipeline").
//			Tasks(
//				config.NewTask("build", "golang:1.19").Script("go build ./..."),
//				config.NewTask("test", "golang:1.19").Script("go test ./...").
//					DependsOn("build", config.RequiredParentStatusSuccess),
//			).
//			Finish()
//		if err != nil {
//			log.Fatal(err)
//		}
//	}
//
// The JSON is what Gofer v0's Go SDK (package config) printed for the same calls, so programs
// written for it only change their import path; Gofer's additions (shared tasks, timeouts,
// retries, declared triggers) appear in the JSON only when used. Standard library only.
package config

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// RequiredParentStatus is what a parent task must end as for its child to run.
type RequiredParentStatus string

const (
	// RequiredParentStatusAny: the parent finished, whatever its result (successful, failed or
	// skipped).
	RequiredParentStatusAny RequiredParentStatus = "Any"
	// RequiredParentStatusSuccess: the parent succeeded.
	RequiredParentStatusSuccess RequiredParentStatus = "Success"
	// RequiredParentStatusFailure: the parent failed.
	RequiredParentStatusFailure RequiredParentStatus = "Failure"
)

// MaxRetries is the most retries a task may ask for.
const MaxRetries = 10

// RegistryAuth is the login for a private image registry.
type RegistryAuth struct {
	User string `json:"user"`
	Pass string `json:"pass"`
}

// Task is one task of a pipeline, as printed.
type Task struct {
	ID                    string                          `json:"id"`
	Description           string                          `json:"description"`
	Image                 string                          `json:"image,omitempty"`
	RegistryAuth          *RegistryAuth                   `json:"registry_auth"`
	DependsOn             map[string]RequiredParentStatus `json:"depends_on"`
	Variables             map[string]string               `json:"variables"`
	Entrypoint            *[]string                       `json:"entrypoint"`
	Command               *[]string                       `json:"command"`
	InjectAPIToken        bool                            `json:"inject_api_token"`
	AlwaysPullNewestImage bool                            `json:"always_pull_newest_image"`
	// Gofer's additions; absent from the JSON when unset.
	Plugin     string            `json:"plugin,omitempty"`
	Settings   map[string]string `json:"settings,omitempty"`
	Timeout    string            `json:"timeout,omitempty"`
	Retries    uint32            `json:"retries,omitempty"`
	KeepFailed string            `json:"keep_failed,omitempty"`
	Resources  *Resources        `json:"resources,omitempty"`
	Workspace  bool              `json:"workspace,omitempty"`
	Placement  []string          `json:"placement,omitempty"`
}

// Resources are the CPU and memory limits of a container task.
type Resources struct {
	CPUs   float64 `json:"cpus,omitempty"`
	Memory string  `json:"memory,omitempty"`
}

// Trigger is a subscription that deploying the pipeline sets up.
type Trigger struct {
	Plugin   string            `json:"plugin"`
	ID       string            `json:"id"`
	Settings map[string]string `json:"settings"`
}

// Pipeline is a whole pipeline config, as printed.
type Pipeline struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	Description string  `json:"description"`
	Parallelism int64   `json:"parallelism"`
	Tasks       []*Task `json:"tasks"`
	// Gofer's additions; absent from the JSON when unset.
	Timeout    string     `json:"timeout,omitempty"`
	KeepFailed string     `json:"keep_failed,omitempty"`
	Triggers   []*Trigger `json:"triggers,omitempty"`
	Placement  []string   `json:"placement,omitempty"`
}

// PipelineWrapper builds a Pipeline.
type PipelineWrapper struct {
	Pipeline
}

// NewPipeline starts a pipeline. The id is 3 to 32 characters of [a-zA-Z0-9-].
func NewPipeline(id, name string) *PipelineWrapper {
	return &PipelineWrapper{Pipeline{ID: id, Name: name, Tasks: []*Task{}}}
}

// Description sets what the pipeline is for.
func (p *PipelineWrapper) Description(description string) *PipelineWrapper {
	p.Pipeline.Description = description
	return p
}

// Parallelism caps how many runs of the pipeline run at once; 0 is the server's default.
func (p *PipelineWrapper) Parallelism(parallelism int64) *PipelineWrapper {
	p.Pipeline.Parallelism = parallelism
	return p
}

// Tasks adds tasks (in any order; dependencies decide the order of execution).
func (p *PipelineWrapper) Tasks(tasks ...*TaskWrapper) *PipelineWrapper {
	for _, task := range tasks {
		p.Pipeline.Tasks = append(p.Pipeline.Tasks, &task.Task)
	}
	return p
}

// Timeout is the longest a run may take; past it the run fails with reason "timeout".
func (p *PipelineWrapper) Timeout(timeout time.Duration) *PipelineWrapper {
	p.Pipeline.Timeout = formatDuration(timeout)
	return p
}

// KeepFailed keeps failed container tasks' filesystems this long (at most 7 days) for
// `gofer task shell`, unless a task says otherwise.
func (p *PipelineWrapper) KeepFailed(keep time.Duration) *PipelineWrapper {
	p.Pipeline.KeepFailed = formatDuration(keep)
	return p
}

// Placement adds placement constraints for every container task (before each task's own), e.g.
// "node.labels.zone == eu".
func (p *PipelineWrapper) Placement(constraints ...string) *PipelineWrapper {
	p.Pipeline.Placement = append(p.Pipeline.Placement, constraints...)
	return p
}

// Triggers declares subscriptions that deploying the pipeline sets up.
func (p *PipelineWrapper) Triggers(triggers ...*TriggerWrapper) *PipelineWrapper {
	for _, trigger := range triggers {
		p.Pipeline.Triggers = append(p.Pipeline.Triggers, &trigger.Trigger)
	}
	return p
}

// Validate checks what the server checks: identifiers, the task graph (no duplicate ids, no
// unknown dependencies, no cycles) and every task.
func (p *PipelineWrapper) Validate() error {
	return p.Pipeline.Validate()
}

// Finish validates the pipeline and prints it as JSON on stdout, for `gofer pipeline create`.
func (p *PipelineWrapper) Finish() error {
	if err := p.Validate(); err != nil {
		return err
	}
	// Like json.Marshal, without escaping <, > and & (scripts stay readable).
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(p.Pipeline); err != nil {
		return fmt.Errorf("could not print the pipeline: %w", err)
	}
	return nil
}

// TaskWrapper builds a Task.
type TaskWrapper struct {
	Task
}

// NewTask is a task that runs a container image.
func NewTask(id, image string) *TaskWrapper {
	return &TaskWrapper{Task{
		ID:        id,
		Image:     image,
		DependsOn: map[string]RequiredParentStatus{},
		Variables: map[string]string{},
	}}
}

// NewSharedTask is a task run by a shared-task plugin (e.g. "http-request") instead of a container.
func NewSharedTask(id, plugin string) *TaskWrapper {
	task := NewTask(id, "")
	task.Task.Plugin = plugin
	task.Task.Settings = map[string]string{}
	return task
}

// Description sets what the task does.
func (t *TaskWrapper) Description(description string) *TaskWrapper {
	t.Task.Description = description
	return t
}

// RegistryAuth is the login for the image's private registry.
func (t *TaskWrapper) RegistryAuth(user, pass string) *TaskWrapper {
	t.Task.RegistryAuth = &RegistryAuth{User: user, Pass: pass}
	return t
}

// DependsOn makes the task wait for a parent, and run only if the parent ends as required.
func (t *TaskWrapper) DependsOn(taskID string, status RequiredParentStatus) *TaskWrapper {
	t.Task.DependsOn[taskID] = status
	return t
}

// DependsOnMany adds several parents at once.
func (t *TaskWrapper) DependsOnMany(parents map[string]RequiredParentStatus) *TaskWrapper {
	for id, status := range parents {
		t.Task.DependsOn[id] = status
	}
	return t
}

// Variables adds environment variables (values may be secrets or objects, see PipelineSecret).
func (t *TaskWrapper) Variables(variables map[string]string) *TaskWrapper {
	for key, value := range variables {
		t.Task.Variables[key] = value
	}
	return t
}

// Variable adds one environment variable.
func (t *TaskWrapper) Variable(key, value string) *TaskWrapper {
	t.Task.Variables[key] = value
	return t
}

// Entrypoint replaces the image's entrypoint.
func (t *TaskWrapper) Entrypoint(entrypoint ...string) *TaskWrapper {
	t.Task.Entrypoint = &entrypoint
	return t
}

// Command replaces the image's command.
func (t *TaskWrapper) Command(command ...string) *TaskWrapper {
	t.Task.Command = &command
	return t
}

// Script runs a shell script in the container (the command becomes `/bin/sh -c SCRIPT`).
func (t *TaskWrapper) Script(script string) *TaskWrapper {
	return t.Command("/bin/sh", "-c", strings.TrimSpace(script))
}

// InjectAPIToken gives the task a token for the Gofer API, valid while the run lasts.
func (t *TaskWrapper) InjectAPIToken(inject bool) *TaskWrapper {
	t.Task.InjectAPIToken = inject
	return t
}

// AlwaysPullNewestImage pulls the image before every run, even when it is present.
func (t *TaskWrapper) AlwaysPullNewestImage(pull bool) *TaskWrapper {
	t.Task.AlwaysPullNewestImage = pull
	return t
}

// Setting sets one setting of a shared task.
func (t *TaskWrapper) Setting(key, value string) *TaskWrapper {
	if t.Task.Settings == nil {
		t.Task.Settings = map[string]string{}
	}
	t.Task.Settings[key] = value
	return t
}

// Timeout is the longest the task may run; past it the task fails with reason "timeout".
func (t *TaskWrapper) Timeout(timeout time.Duration) *TaskWrapper {
	t.Task.Timeout = formatDuration(timeout)
	return t
}

// KeepFailed keeps the container of a failed last attempt this long (at most 7 days), so that
// `gofer task shell` can open a shell in its filesystem. It overrides the pipeline's.
func (t *TaskWrapper) KeepFailed(keep time.Duration) *TaskWrapper {
	t.Task.KeepFailed = formatDuration(keep)
	return t
}

// Placement adds where a cluster engine may run the container: Swarm placement constraints such
// as "node.labels.gpu == true" (all must hold; single-host engines ignore them).
func (t *TaskWrapper) Placement(constraints ...string) *TaskWrapper {
	t.Task.Placement = append(t.Task.Placement, constraints...)
	return t
}

// Workspace mounts the run's workspace at /gofer/workspace (also in GOFER_WORKSPACE): one
// volume shared by the run's tasks that ask for it, removed when the run ends.
func (t *TaskWrapper) Workspace() *TaskWrapper {
	t.Task.Workspace = true
	return t
}

// CPUs is how many CPUs the container may use, e.g. 0.5.
func (t *TaskWrapper) CPUs(cpus float64) *TaskWrapper {
	if t.Task.Resources == nil {
		t.Task.Resources = &Resources{}
	}
	t.Task.Resources.CPUs = cpus
	return t
}

// Memory is how much memory the container may use, e.g. "256m" or "1g"; past it the task is
// killed and fails saying so.
func (t *TaskWrapper) Memory(memory string) *TaskWrapper {
	if t.Task.Resources == nil {
		t.Task.Resources = &Resources{}
	}
	t.Task.Resources.Memory = memory
	return t
}

// Retries is how many more times to try the task after it fails (0 to 10).
func (t *TaskWrapper) Retries(retries uint32) *TaskWrapper {
	t.Task.Retries = retries
	return t
}

// TriggerWrapper builds a Trigger.
type TriggerWrapper struct {
	Trigger
}

// NewTrigger declares a subscription to a trigger plugin (e.g. "interval", "cron").
func NewTrigger(plugin, id string) *TriggerWrapper {
	return &TriggerWrapper{Trigger{Plugin: plugin, ID: id, Settings: map[string]string{}}}
}

// Setting sets one setting of the subscription (e.g. "every" = "1h" for interval).
func (t *TriggerWrapper) Setting(key, value string) *TriggerWrapper {
	t.Trigger.Settings[key] = value
	return t
}

// PipelineSecret is a variable value replaced at launch by the pipeline's secret `key`.
func PipelineSecret(key string) string { return fmt.Sprintf("pipeline_secret{{%s}}", key) }

// GlobalSecret is a variable value replaced at launch by the global secret `key`.
func GlobalSecret(key string) string { return fmt.Sprintf("global_secret{{%s}}", key) }

// PipelineObject is a variable value replaced at launch by the pipeline's object `key`.
func PipelineObject(key string) string { return fmt.Sprintf("pipeline_object{{%s}}", key) }

// RunObject is a variable value replaced at launch by the run's object `key`.
func RunObject(key string) string { return fmt.Sprintf("run_object{{%s}}", key) }

// formatDuration writes a duration the server reads ("90s", "1500ms").
func formatDuration(duration time.Duration) string {
	if duration%time.Second == 0 {
		return fmt.Sprintf("%ds", duration/time.Second)
	}
	return fmt.Sprintf("%dms", duration/time.Millisecond)
}

// Validate checks what the server checks; each error names what is wrong and where.
func (p *Pipeline) Validate() error {
	if err := validateIdentifier("pipeline id", p.ID); err != nil {
		return err
	}
	if p.Parallelism < 0 {
		return fmt.Errorf("parallelism must be 0 (server default) or more, got %d", p.Parallelism)
	}
	if len(p.Tasks) == 0 {
		return fmt.Errorf("pipeline '%s' has no tasks; a pipeline needs at least one task", p.ID)
	}
	tasks := map[string]*Task{}
	for _, task := range p.Tasks {
		if err := validateIdentifier("task id", task.ID); err != nil {
			return err
		}
		if _, seen := tasks[task.ID]; seen {
			return fmt.Errorf("task '%s' is defined more than once", task.ID)
		}
		tasks[task.ID] = task
		switch {
		case task.Image == "" && task.Plugin == "":
			return fmt.Errorf("task '%s' has no image; a task needs a container image or a shared-task plugin", task.ID)
		case task.Image != "" && task.Plugin != "":
			return fmt.Errorf("task '%s' names both an image and a plugin; a task is either a container or a shared task", task.ID)
		}
		if task.Retries > MaxRetries {
			return fmt.Errorf("task '%s' asks for %d retries; at most %d are allowed", task.ID, task.Retries, MaxRetries)
		}
	}
	for _, task := range p.Tasks {
		for _, parent := range sortedParents(task) {
			if _, ok := tasks[parent]; !ok {
				return fmt.Errorf("task '%s' depends on '%s', which is not a task of this pipeline", task.ID, parent)
			}
			switch task.DependsOn[parent] {
			case RequiredParentStatusAny, RequiredParentStatusSuccess, RequiredParentStatusFailure:
			default:
				return fmt.Errorf("task '%s' depends on '%s' with status '%s'; use Any, Success or Failure", task.ID, parent, task.DependsOn[parent])
			}
		}
	}
	if cycle := findCycle(p.Tasks, tasks); cycle != nil {
		return fmt.Errorf("the tasks form a cycle: %s", strings.Join(cycle, " -> "))
	}
	triggers := map[string]bool{}
	for _, trigger := range p.Triggers {
		if err := validateIdentifier("trigger id", trigger.ID); err != nil {
			return err
		}
		key := trigger.Plugin + "/" + trigger.ID
		if triggers[key] {
			return fmt.Errorf("trigger '%s' of plugin '%s' is declared more than once", trigger.ID, trigger.Plugin)
		}
		triggers[key] = true
	}
	return nil
}

func sortedParents(task *Task) []string {
	parents := make([]string, 0, len(task.DependsOn))
	for parent := range task.DependsOn {
		parents = append(parents, parent)
	}
	sort.Strings(parents)
	return parents
}

// findCycle returns a cycle as a path of task ids (first id repeated at the end), or nil.
func findCycle(order []*Task, tasks map[string]*Task) []string {
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	var path []string
	var visit func(id string) []string
	visit = func(id string) []string {
		switch state[id] {
		case done:
			return nil
		case visiting:
			for i, step := range path {
				if step == id {
					return append(append([]string{}, path[i:]...), id)
				}
			}
		}
		state[id] = visiting
		path = append(path, id)
		for _, parent := range sortedParents(tasks[id]) {
			if cycle := visit(parent); cycle != nil {
				return cycle
			}
		}
		path = path[:len(path)-1]
		state[id] = done
		return nil
	}
	for _, task := range order {
		if cycle := visit(task.ID); cycle != nil {
			return cycle
		}
	}
	return nil
}

func validateIdentifier(what, id string) error {
	var problem string
	switch {
	case len(id) > 32:
		problem = "length cannot be greater than 32"
	case len(id) < 3:
		problem = "length cannot be less than 3"
	default:
		for _, c := range id {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				problem = "can only be made up of alphanumeric and hyphen characters"
				break
			}
		}
	}
	if problem != "" {
		return fmt.Errorf("invalid %s '%s': %s", what, id, problem)
	}
	return nil
}
