package plugin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAPISendsTheTokenAndReadsErrors(t *testing.T) {
	var seen []string
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen = append(seen, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization")+" "+r.Header.Get("gofer-api-version")+" "+string(body))
		switch {
		case strings.HasPrefix(r.URL.Path, "/api/extensions/other/"):
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"message":"may not read plugins:other","request_id":"x"}`)
		case r.Method == http.MethodGet:
			_, _ = io.WriteString(w, "stored")
		default:
			w.WriteHeader(http.StatusCreated)
		}
	}))
	defer server.Close()

	if _, err := NewAPI(); err == nil {
		t.Fatal("NewAPI without the environment should explain itself")
	}
	t.Setenv(APIBaseURLEnv, server.URL+"/")
	t.Setenv(TokenEnv, "secret")
	api, err := NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := api.PutObject(ctx, "mine", "a key", []byte("v")); err != nil {
		t.Fatal(err)
	}
	value, err := api.GetObject(ctx, "mine", "a key")
	if err != nil || string(value) != "stored" {
		t.Fatalf("GetObject = %q, %v", value, err)
	}
	_, err = api.GetObject(ctx, "other", "k")
	if !IsForbidden(err) || !strings.Contains(err.Error(), "may not read plugins:other") {
		t.Fatalf("another plugin's object: %v", err)
	}
	if err := api.StartRun(ctx, "default", "p", map[string]string{"A": "1"}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"POST /api/extensions/mine/objects/a%20key?force=true Bearer secret v0 v",
		"GET /api/extensions/mine/objects/a%20key Bearer secret v0 ",
		"GET /api/extensions/other/objects/k Bearer secret v0 ",
		`POST /api/namespaces/default/pipelines/p/runs Bearer secret v0 {"variables":{"A":"1"}}`,
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}
