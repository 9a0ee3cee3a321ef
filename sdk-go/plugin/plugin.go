// Package plugin writes Gofer plugins in Go: a trigger (starts runs) or a shared task (runs as a
// task of a pipeline) as a plain Go interface implementation, served over gRPC to the Gofer
// server that launched the program.
//
//	func main() { plugin.Serve(&myTrigger{}) }
//
// The server starts the plugin from a manifest in its plugins folder, reads the handshake line
// this package prints, talks to it over a unix socket, restarts it if it crashes and stops it on
// shutdown. A plugin exits by itself when the server goes away (its stdin closes), so it never
// outlives the server. Run by hand, the program says what it is and exits.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "gofer.dev/sdk/plugin/proto/pluginv1"
)

const (
	// MagicCookieKey is the environment variable the server sets when it launches a plugin.
	MagicCookieKey = "GOFER_PLUGIN_MAGIC_COOKIE"
	// MagicCookieValue is its value; a plugin refuses to start without it.
	MagicCookieValue = "d2a5f3b1-gofer-plugin-v1"
	// SocketEnv names the unix socket the server wants the plugin to listen on.
	SocketEnv = "GOFER_PLUGIN_SOCKET"
	// CoreProtocolVersion and ProtocolVersion are the first two fields of the handshake line.
	CoreProtocolVersion = 1
	ProtocolVersion     = 1
)

// Parameter is one setting a plugin understands.
type Parameter struct {
	Key           string
	Required      bool
	Documentation string
}

// Info is what a plugin says about itself (shown by `GET /api/plugins`).
type Info struct {
	// Name is unique: what subscriptions and tasks refer to. Identifier rules: 3 to 32 of
	// [a-zA-Z0-9-].
	Name        string
	Version     string
	Description string
	// Settings of a subscription (triggers) or of a task (tasks).
	Settings []Parameter
}

// Plugin is a Trigger or a Task.
type Plugin interface {
	Info() Info
}

// FireFunc starts a run of the pipeline behind one subscription, with these run variables (they
// reach the tasks as text, never as secrets). It waits while the server is behind (at most
// FiresBuffered fires wait), instead of dropping fires.
type FireFunc func(variables map[string]string)

// KeyedFireFunc is a FireFunc with an idempotency key: fires of the plugin with the same key start
// one run, so a trigger that may send the same event twice (a retry, a restart) gives it a key.
// A Trigger gets one by implementing KeyedSubscriber instead of (or besides) Subscribe.
type KeyedFireFunc func(variables map[string]string, idempotencyKey string)

// KeyedSubscriber is implemented by triggers that fire with idempotency keys.
type KeyedSubscriber interface {
	SubscribeKeyed(subscription string, settings map[string]string, fire KeyedFireFunc) error
}

// Trigger starts runs. The server calls Subscribe for each pipeline subscribed to the plugin
// (again after every restart of the plugin); the trigger calls fire whenever that pipeline should
// run, from any goroutine, until Unsubscribe.
type Trigger interface {
	Plugin
	// Subscribe starts watching. A returned error refuses the subscription; its message is shown
	// to the user (the API answers 400 with it), so say which setting is wrong and why.
	Subscribe(subscription string, settings map[string]string, fire FireFunc) error
	// Unsubscribe stops watching; fire must not be called for it any more.
	Unsubscribe(subscription string)
}

// ExternalEvent is an HTTP request sent to `/api/external/{plugin}` or
// `/api/external/{plugin}/{path...}`.
type ExternalEvent struct {
	// Method is POST, GET...
	Method string
	// Path is what follows /api/external/{plugin}: "" or e.g. "/github/push".
	Path string
	// Query is the query string without the "?".
	Query string
	// RemoteAddress is the sender's ip:port as the server saw it.
	RemoteAddress string
	// Headers in the order received, names in lower case; a name may repeat.
	Headers [][2]string
	Body    []byte
}

// Header returns the first value of a header (name in any case), or "".
func (e ExternalEvent) Header(name string) string {
	for _, header := range e.Headers {
		if strings.EqualFold(header[0], name) {
			return header[1]
		}
	}
	return ""
}

// Fire asks for a run of the pipeline behind a subscription.
type Fire struct {
	Subscription string
	Variables    map[string]string
	// IdempotencyKey, when set: fires of the plugin with the same key start one run.
	IdempotencyKey string
}

// ExternalResponse is the HTTP status and message for the sender, and the runs to start.
type ExternalResponse struct {
	Status  int
	Message string
	Fires   []Fire
}

// ExternalEventHandler is implemented by triggers that take outside events (webhooks...).
type ExternalEventHandler interface {
	ExternalEvent(ctx context.Context, event ExternalEvent) ExternalResponse
}

// RunRequest is one run of a shared task.
type RunRequest struct {
	// The task's settings from the pipeline config.
	Settings map[string]string
	// The task's environment (GOFER_* variables, the task's and the run's variables).
	Env map[string]string
	// What is written here is the task's log, streamed to the server as it is written.
	Stdout io.Writer
	Stderr io.Writer
}

// Task runs as a task of a pipeline.
type Task interface {
	Plugin
	// Run returns the exit code (0: success), or an error that fails the task with its message.
	// ctx is cancelled when the task is cancelled or passes its deadline.
	Run(ctx context.Context, request RunRequest) (int, error)
}

// Serve serves a Trigger or a Task to the Gofer server that launched this program, until the
// server stops it or goes away. It does not return; it exits the program.
func Serve(p Plugin) {
	if err := serve(p, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", filepath.Base(os.Args[0]), err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serve is Serve without the exits, for tests.
func serve(p Plugin, stdin io.Reader, stdout io.Writer) error {
	if os.Getenv(MagicCookieKey) != MagicCookieValue {
		return errors.New("this program is a Gofer plugin: it is started by the Gofer server " +
			"from a manifest in its plugins folder (see docs/plugins-go.md), not run by hand")
	}
	server := grpc.NewServer()
	healthServer := health.NewServer()
	healthpb.RegisterHealthServer(server, healthServer)
	switch plugin := p.(type) {
	case Trigger:
		pb.RegisterTriggerServiceServer(server, newTriggerServer(plugin))
	case Task:
		pb.RegisterTaskServiceServer(server, &taskServer{task: plugin})
	default:
		return fmt.Errorf("%T is neither a plugin.Trigger nor a plugin.Task", p)
	}
	healthServer.SetServingStatus("plugin", healthpb.HealthCheckResponse_SERVING)

	socket := os.Getenv(SocketEnv)
	if socket == "" {
		dir, err := os.MkdirTemp("", "gofer-plugin-")
		if err != nil {
			return fmt.Errorf("could not create a directory for the socket: %w", err)
		}
		defer os.RemoveAll(dir)
		socket = filepath.Join(dir, "plugin.sock")
	}
	listener, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("could not listen on %s: %w", socket, err)
	}
	defer os.Remove(socket)

	// The handshake: the server reads this one line, then connects.
	if _, err := fmt.Fprintf(stdout, "%d|%d|unix|%s|grpc\n", CoreProtocolVersion, ProtocolVersion, socket); err != nil {
		return fmt.Errorf("could not write the handshake: %w", err)
	}

	stop := make(chan string, 3)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() { stop <- fmt.Sprintf("received %v", <-signals) }()
	go func() {
		// The server keeps our stdin open; it closes when the server exits, however it exits.
		_, _ = io.Copy(io.Discard, stdin)
		stop <- "the server closed stdin"
	}()
	go watchParent(stop)

	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	select {
	case err := <-served:
		return err
	case reason := <-stop:
		fmt.Fprintf(os.Stderr, "stopping: %s\n", reason)
	}
	done := make(chan struct{})
	go func() { server.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		server.Stop()
	}
	return nil
}

// watchParent reports when this process is re-parented (its parent died), in case stdin is not a
// pipe from the server.
func watchParent(stop chan<- string) {
	parent := os.Getppid()
	for range time.Tick(time.Second) {
		if os.Getppid() != parent {
			stop <- "the server went away"
			return
		}
	}
}

type triggerServer struct {
	pb.UnimplementedTriggerServiceServer
	trigger Trigger
	fires   chan *pb.FiresResponse

	mu            sync.Mutex
	subscriptions map[string]bool
}

// FiresBuffered is how many fires wait for the server's stream; a FireFunc called when that many
// wait blocks until the server has taken one (back-pressure: no fire is dropped).
const FiresBuffered = 4096

func newTriggerServer(trigger Trigger) *triggerServer {
	return &triggerServer{
		trigger:       trigger,
		fires:         make(chan *pb.FiresResponse, FiresBuffered),
		subscriptions: map[string]bool{},
	}
}

func (s *triggerServer) Info(context.Context, *pb.TriggerServiceInfoRequest) (*pb.TriggerServiceInfoResponse, error) {
	return &pb.TriggerServiceInfoResponse{Info: pluginInfo(s.trigger.Info(), pb.PluginKind_PLUGIN_KIND_TRIGGER)}, nil
}

func (s *triggerServer) Subscribe(_ context.Context, request *pb.SubscribeRequest) (*pb.SubscribeResponse, error) {
	subscription := request.GetSubscription()
	fire := func(variables map[string]string, key string) {
		s.mu.Lock()
		active := s.subscriptions[subscription]
		s.mu.Unlock()
		if !active {
			return
		}
		// Waits while FiresBuffered fires wait for the server.
		s.fires <- &pb.FiresResponse{Fire: &pb.Fire{Subscription: subscription, Variables: variables, IdempotencyKey: key}}
	}
	s.mu.Lock()
	s.subscriptions[subscription] = true
	s.mu.Unlock()
	var err error
	if keyed, ok := s.trigger.(KeyedSubscriber); ok {
		err = keyed.SubscribeKeyed(subscription, request.GetSettings(), fire)
	} else {
		err = s.trigger.Subscribe(subscription, request.GetSettings(), func(variables map[string]string) {
			fire(variables, "")
		})
	}
	if err != nil {
		s.mu.Lock()
		delete(s.subscriptions, subscription)
		s.mu.Unlock()
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &pb.SubscribeResponse{}, nil
}

func (s *triggerServer) Unsubscribe(_ context.Context, request *pb.UnsubscribeRequest) (*pb.UnsubscribeResponse, error) {
	s.mu.Lock()
	delete(s.subscriptions, request.GetSubscription())
	s.mu.Unlock()
	s.trigger.Unsubscribe(request.GetSubscription())
	return &pb.UnsubscribeResponse{}, nil
}

func (s *triggerServer) Fires(_ *pb.FiresRequest, stream pb.TriggerService_FiresServer) error {
	// Answer at once, so the server knows the stream is open before the first fire.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case fire := <-s.fires:
			if err := stream.Send(fire); err != nil {
				// Keep it for the next stream: the server opens the stream again.
				go func() { s.fires <- fire }()
				return err
			}
		}
	}
}

func (s *triggerServer) ExternalEvent(ctx context.Context, request *pb.ExternalEventRequest) (*pb.ExternalEventResponse, error) {
	handler, ok := s.trigger.(ExternalEventHandler)
	if !ok {
		return &pb.ExternalEventResponse{
			Status:  404,
			Message: fmt.Sprintf("plugin '%s' does not take external events", s.trigger.Info().Name),
		}, nil
	}
	event := ExternalEvent{
		Method:        request.GetMethod(),
		Path:          request.GetPath(),
		Query:         request.GetQuery(),
		RemoteAddress: request.GetRemoteAddress(),
		Body:          request.GetBody(),
	}
	for _, header := range request.GetHeaders() {
		event.Headers = append(event.Headers, [2]string{header.GetName(), header.GetValue()})
	}
	response := handler.ExternalEvent(ctx, event)
	out := &pb.ExternalEventResponse{Status: uint32(response.Status), Message: response.Message}
	for _, fire := range response.Fires {
		out.Fires = append(out.Fires, &pb.Fire{Subscription: fire.Subscription, Variables: fire.Variables, IdempotencyKey: fire.IdempotencyKey})
	}
	return out, nil
}

type taskServer struct {
	pb.UnimplementedTaskServiceServer
	task Task
}

func (s *taskServer) Info(context.Context, *pb.TaskServiceInfoRequest) (*pb.TaskServiceInfoResponse, error) {
	return &pb.TaskServiceInfoResponse{Info: pluginInfo(s.task.Info(), pb.PluginKind_PLUGIN_KIND_TASK)}, nil
}

// streamWriter sends what is written as output chunks of one stream.
type streamWriter struct {
	mu     *sync.Mutex
	send   func(*pb.RunResponse) error
	stream pb.OutputStream
}

func (w streamWriter) Write(data []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	chunk := append([]byte(nil), data...)
	err := w.send(&pb.RunResponse{Event: &pb.RunResponse_Output{Output: &pb.Output{Stream: w.stream, Data: chunk}}})
	if err != nil {
		return 0, err
	}
	return len(data), nil
}

func (s *taskServer) Run(request *pb.RunRequest, stream pb.TaskService_RunServer) error {
	mu := &sync.Mutex{}
	stdout := streamWriter{mu: mu, send: stream.Send, stream: pb.OutputStream_OUTPUT_STREAM_STDOUT}
	stderr := streamWriter{mu: mu, send: stream.Send, stream: pb.OutputStream_OUTPUT_STREAM_STDERR}
	code, err := runRecovering(stream.Context(), s.task, RunRequest{
		Settings: request.GetSettings(),
		Env:      request.GetEnv(),
		Stdout:   stdout,
		Stderr:   stderr,
	})
	if ctxErr := stream.Context().Err(); ctxErr != nil {
		// The server cancelled the task (or it passed its deadline); nobody reads the exit.
		fmt.Fprintf(os.Stderr, "run cancelled by the server: %v\n", ctxErr)
		return ctxErr
	}
	exit := &pb.Exit{}
	switch {
	case err != nil:
		exit.Error = err.Error()
	case code < 0 || code > 255:
		exit.Error = fmt.Sprintf("exit code %d is out of range (0 to 255)", code)
	default:
		exit.Code = uint32(code)
	}
	mu.Lock()
	defer mu.Unlock()
	return stream.Send(&pb.RunResponse{Event: &pb.RunResponse_Exit{Exit: exit}})
}

// runRecovering turns a panic in the task into an error, so one bad run does not kill the plugin.
func runRecovering(ctx context.Context, task Task, request RunRequest) (code int, err error) {
	defer func() {
		if recovered := recover(); recovered != nil {
			err = fmt.Errorf("the task panicked: %v", recovered)
		}
	}()
	return task.Run(ctx, request)
}

func pluginInfo(info Info, kind pb.PluginKind) *pb.PluginInfo {
	response := &pb.PluginInfo{
		Name:        info.Name,
		Kind:        kind,
		Version:     info.Version,
		Description: info.Description,
	}
	for _, parameter := range info.Settings {
		response.Settings = append(response.Settings, &pb.Parameter{
			Key:           parameter.Key,
			Required:      parameter.Required,
			Documentation: parameter.Documentation,
		})
	}
	return response
}

// SortedKeys returns a map's keys in order, for printing settings and variables predictably.
func SortedKeys(values map[string]string) []string {
	keys := make([]string, 0, len(values))
	for key := range values {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	return keys
}
