package plugin

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "gofer.dev/sdk/plugin/proto/pluginv1"
)

type testTrigger struct{ fires map[string]FireFunc }

func (t *testTrigger) Info() Info { return Info{Name: "test-trigger", Version: "1.0.0"} }
func (t *testTrigger) Subscribe(subscription string, settings map[string]string, fire FireFunc) error {
	if settings["bad"] != "" {
		return errors.New("the setting 'bad' is bad")
	}
	t.fires[subscription] = fire
	fire(map[string]string{"FIRST": "yes"})
	return nil
}
func (t *testTrigger) Unsubscribe(subscription string) { delete(t.fires, subscription) }

type testTask struct{}

func (testTask) Info() Info {
	return Info{Name: "test-task", Settings: []Parameter{{Key: "x", Required: true}}}
}
func (testTask) Run(ctx context.Context, request RunRequest) (int, error) {
	if request.Settings["panic"] != "" {
		panic("boom")
	}
	io.WriteString(request.Stdout, "out "+request.Env["NAME"]+"\n")
	io.WriteString(request.Stderr, "err\n")
	return 7, nil
}

// start serves p in-process, as the server would launch it, and connects to it.
func start(t *testing.T, p Plugin) *grpc.ClientConn {
	t.Helper()
	os.Setenv(MagicCookieKey, MagicCookieValue)
	os.Setenv(SocketEnv, filepath.Join(t.TempDir(), "plugin.sock"))
	stdinReader, stdinWriter := io.Pipe()
	stdoutReader, stdoutWriter := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- serve(p, stdinReader, stdoutWriter) }()
	t.Cleanup(func() {
		stdinWriter.Close() // as when the server exits
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the plugin did not stop when its stdin closed")
		}
	})
	line, err := bufio.NewReader(stdoutReader).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Split(strings.TrimSpace(line), "|")
	if len(fields) != 5 || fields[0] != "1" || fields[1] != "1" || fields[2] != "unix" || fields[4] != "grpc" {
		t.Fatalf("bad handshake line %q", line)
	}
	go io.Copy(io.Discard, stdoutReader)
	conn, err := grpc.Dial(fields[3], grpc.WithInsecure(), grpc.WithBlock(), grpc.WithTimeout(5*time.Second),
		grpc.WithContextDialer(func(ctx context.Context, address string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", address)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	health, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || health.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", health, err)
	}
	return conn
}

func TestTrigger(t *testing.T) {
	conn := start(t, &testTrigger{fires: map[string]FireFunc{}})
	client := pb.NewTriggerServiceClient(conn)
	ctx := context.Background()
	response, err := client.Info(ctx, &pb.TriggerServiceInfoRequest{})
	info := response.GetInfo()
	if err != nil || info.Name != "test-trigger" || info.Kind != pb.PluginKind_PLUGIN_KIND_TRIGGER {
		t.Fatalf("info: %v %v", info, err)
	}
	_, err = client.Subscribe(ctx, &pb.SubscribeRequest{Subscription: "ns/p/s", Settings: map[string]string{"bad": "1"}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "the setting 'bad' is bad") {
		t.Fatalf("a refused subscription: %v", err)
	}
	if _, err := client.Subscribe(ctx, &pb.SubscribeRequest{Subscription: "ns/p/s"}); err != nil {
		t.Fatal(err)
	}
	// The fire made during Subscribe waits for the stream.
	stream, err := client.Fires(ctx, &pb.FiresRequest{})
	if err != nil {
		t.Fatal(err)
	}
	received, err := stream.Recv()
	fire := received.GetFire()
	if err != nil || fire.Subscription != "ns/p/s" || fire.Variables["FIRST"] != "yes" {
		t.Fatalf("fire: %v %v", fire, err)
	}
	external, err := client.ExternalEvent(ctx, &pb.ExternalEventRequest{})
	if err != nil || external.Status != 404 {
		t.Fatalf("a trigger without ExternalEvent answers 404: %v %v", external, err)
	}
}

func TestTask(t *testing.T) {
	conn := start(t, testTask{})
	client := pb.NewTaskServiceClient(conn)
	ctx := context.Background()
	response, err := client.Info(ctx, &pb.TaskServiceInfoRequest{})
	info := response.GetInfo()
	if err != nil || info.Kind != pb.PluginKind_PLUGIN_KIND_TASK || !info.Settings[0].Required {
		t.Fatalf("info: %v %v", info, err)
	}
	run := func(settings map[string]string) (string, *pb.Exit) {
		stream, err := client.Run(ctx, &pb.RunRequest{Settings: settings, Env: map[string]string{"NAME": "gofer"}})
		if err != nil {
			t.Fatal(err)
		}
		var output strings.Builder
		for {
			event, err := stream.Recv()
			if err != nil {
				t.Fatalf("the stream ended without an exit: %v", err)
			}
			if chunk := event.GetOutput(); chunk != nil {
				output.Write(chunk.Data)
			}
			if exit := event.GetExit(); exit != nil {
				return output.String(), exit
			}
		}
	}
	output, exit := run(nil)
	if output != "out gofer\nerr\n" || exit.Code != 7 || exit.Error != "" {
		t.Fatalf("run: %q %v", output, exit)
	}
	_, exit = run(map[string]string{"panic": "1"})
	if !strings.Contains(exit.Error, "the task panicked: boom") {
		t.Fatalf("a panic is an error, not a dead plugin: %v", exit)
	}
}

func TestRefusesToRunByHand(t *testing.T) {
	os.Unsetenv(MagicCookieKey)
	err := serve(testTask{}, strings.NewReader(""), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "is a Gofer plugin") {
		t.Fatalf("got %v", err)
	}
}
