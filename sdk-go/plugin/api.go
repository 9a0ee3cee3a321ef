package plugin

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

const (
	// TokenEnv holds the plugin's own API token, made by the server for this process.
	TokenEnv = "GOFER_PLUGIN_TOKEN"
	// APIBaseURLEnv is where the server's REST API is, e.g. http://127.0.0.1:8080.
	APIBaseURLEnv = "GOFER_API_BASE_URL"
	// APICACertEnv names the certificate to trust when the API is served over TLS.
	APICACertEnv = "GOFER_API_CA_CERT"
)

// API calls the Gofer server's REST API with the plugin's own identity: a token the server makes
// for each plugin process. It may read, write and delete the plugin's own objects
// (/api/extensions/NAME/objects) and read its subscriptions; a trigger may also start runs. It is
// refused (403) anything else, such as secrets or another plugin's objects.
type API struct {
	BaseURL string
	token   string
	client  *http.Client
}

// APIError is an answer of the server other than success.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("gofer API answered %d: %s", e.Status, e.Message)
}

// NewAPI makes a client from the environment the server started the plugin with.
func NewAPI() (*API, error) {
	base := strings.TrimRight(os.Getenv(APIBaseURLEnv), "/")
	token := os.Getenv(TokenEnv)
	if base == "" || token == "" {
		return nil, fmt.Errorf("%s or %s is not set: the plugin was not started by a Gofer server that gives plugins API access", APIBaseURLEnv, TokenEnv)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if path := os.Getenv(APICACertEnv); path != "" {
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading the API's certificate (%s): %w", APICACertEnv, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s=%s holds no PEM certificate", APICACertEnv, path)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &API{BaseURL: base, token: token, client: &http.Client{Transport: transport, Timeout: 30 * time.Second}}, nil
}

// Do sends one request (path like "/api/namespaces") with the v0 API header and the plugin's
// token; an answer of 300 or more is returned as an *APIError with the server's message.
func (a *API) Do(ctx context.Context, method, path string, body io.Reader) ([]byte, error) {
	request, err := http.NewRequestWithContext(ctx, method, a.BaseURL+path, body)
	if err != nil {
		return nil, err
	}
	request.Header.Set("gofer-api-version", "v0")
	request.Header.Set("Authorization", "Bearer "+a.token)
	response, err := a.client.Do(request)
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()
	data, err := io.ReadAll(response.Body)
	if err != nil {
		return nil, err
	}
	if response.StatusCode >= 300 {
		var failure struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &failure) != nil || failure.Message == "" {
			failure.Message = strings.TrimSpace(string(data))
		}
		return nil, &APIError{Status: response.StatusCode, Message: failure.Message}
	}
	return data, nil
}

func objectPath(plugin, key string) string {
	return "/api/extensions/" + url.PathEscape(plugin) + "/objects/" + url.PathEscape(key)
}

// PutObject stores (or replaces) one of plugin's objects.
func (a *API) PutObject(ctx context.Context, plugin, key string, value []byte) error {
	_, err := a.Do(ctx, http.MethodPost, objectPath(plugin, key)+"?force=true", bytes.NewReader(value))
	return err
}

// GetObject reads one of plugin's objects.
func (a *API) GetObject(ctx context.Context, plugin, key string) ([]byte, error) {
	return a.Do(ctx, http.MethodGet, objectPath(plugin, key), nil)
}

// DeleteObject deletes one of plugin's objects.
func (a *API) DeleteObject(ctx context.Context, plugin, key string) error {
	_, err := a.Do(ctx, http.MethodDelete, objectPath(plugin, key), nil)
	return err
}

// StartRun starts a run of a pipeline's live version with variables (triggers only).
func (a *API) StartRun(ctx context.Context, namespace, pipeline string, variables map[string]string) error {
	body, err := json.Marshal(map[string]interface{}{"variables": variables})
	if err != nil {
		return err
	}
	_, err = a.Do(ctx, http.MethodPost, "/api/namespaces/"+url.PathEscape(namespace)+"/pipelines/"+url.PathEscape(pipeline)+"/runs", bytes.NewReader(body))
	return err
}

// IsForbidden says whether err is the server refusing the plugin's identity (403).
func IsForbidden(err error) bool {
	var apiError *APIError
	return errors.As(err, &apiError) && apiError.Status == http.StatusForbidden
}
