//! The CLI's HTTP client for the Gofer API.
//!
//! Owns the base URL, the `gofer-api-version` and bearer-token headers, and turning error
//! responses into one-line messages. Must not format output (that is `output`).

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{API_VERSION, API_VERSION_HEADER};

/// Why a request failed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "could not reach the Gofer server at {url} (is it running? see --api-base-url): {source}"
    )]
    Connect { url: String, source: reqwest::Error },
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("unexpected response from {url}: {detail}")]
    Decode { url: String, detail: String },
    #[error("invalid --api-base-url '{0}': it must start with http:// or https://")]
    BadBaseUrl(String),
    #[error("event stream: {0}")]
    Stream(String),
    #[error("could not use the CA certificate {path}: {problem}")]
    CaCertificate { path: String, problem: String },
}

/// A client of one Gofer server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    token: Option<String>,
    /// Extra CA certificate (PEM) trusted for HTTPS and WSS.
    ca_pem: Option<Vec<u8>>,
}

impl Client {
    /// A client of the server at `base_url`; `ca_certificate` (PEM) is trusted for HTTPS on top
    /// of the system's roots (e.g. a server's self-signed certificate).
    pub fn new(
        base_url: &str,
        token: Option<String>,
        ca_certificate: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        let base_url = base_url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ClientError::BadBaseUrl(base_url));
        }
        crate::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder();
        let mut ca_pem = None;
        if let Some(path) = ca_certificate {
            let problem = |problem: String| ClientError::CaCertificate {
                path: path.display().to_string(),
                problem,
            };
            let pem = std::fs::read(path).map_err(|error| problem(error.to_string()))?;
            let certificate =
                reqwest::Certificate::from_pem(&pem).map_err(|error| problem(error.to_string()))?;
            builder = builder.add_root_certificate(certificate);
            ca_pem = Some(pem);
        }
        let http = builder
            .build()
            .map_err(|error| ClientError::CaCertificate {
                path: ca_certificate
                    .map(|path| path.display().to_string())
                    .unwrap_or_default(),
                problem: error.to_string(),
            })?;
        Ok(Self {
            ca_pem,
            http,
            base_url,
            token: token.filter(|token| !token.is_empty()),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.request(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.request(Method::DELETE, path, None).await
    }

    /// GETs a text body (e.g. a log).
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        match self.request(Method::GET, path, None).await {
            Ok(Value::String(text)) => Ok(text),
            Ok(Value::Null) => Ok(String::new()),
            Ok(other) => Ok(other.to_string()),
            Err(error) => Err(error),
        }
    }

    /// The error for a request that did not get an answer.
    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        ClientError::Connect {
            url: self.base_url.clone(),
            source,
        }
    }

    /// GETs a JSON answer whatever its status, for answers that carry data with an error status
    /// (readiness's 503).
    pub async fn get_with_status(&self, path: &str) -> Result<(u16, Value), ClientError> {
        let url = format!("{}{path}", self.base_url);
        let response = self
            .builder(Method::GET, path)
            .send()
            .await
            .map_err(|source| self.unreachable(source))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|source| self.unreachable(source))?;
        let body = serde_json::from_str(&text).map_err(|error| ClientError::Decode {
            url,
            detail: error.to_string(),
        })?;
        Ok((status, body))
    }

    /// Sends one request; returns the JSON body (`null` for 204), or the server's error message.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self.builder(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = self.send(request).await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response
            .text()
            .await
            .map_err(|source| self.unreachable(source))?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        if !content_type.contains("json") {
            return Ok(Value::String(text));
        }
        serde_json::from_str(&text).map_err(|error| ClientError::Decode {
            url,
            detail: error.to_string(),
        })
    }

    /// POSTs raw bytes (streamed); returns the JSON answer.
    pub async fn upload(&self, path: &str, body: reqwest::Body) -> Result<Value, ClientError> {
        let request = self
            .builder(Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        let response = self.send(request).await?;
        response.json().await.map_err(|error| ClientError::Decode {
            url: path.to_string(),
            detail: error.to_string(),
        })
    }

    /// GETs raw bytes; the response streams them.
    pub async fn download(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        self.send(self.builder(Method::GET, path)).await
    }

    fn builder(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .header(API_VERSION_HEADER, API_VERSION);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    /// Sends a request; an error status becomes the server's message.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|source| self.unreachable(source))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|body| {
                    body.get("message")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| {
                    if text.is_empty() {
                        status.to_string()
                    } else {
                        text
                    }
                });
            Err(ClientError::Api {
                status: status.as_u16(),
                message,
            })
        }
    }

    /// Opens a websocket (`wss://` when the server is HTTPS, trusting `--ca-cert` too).
    pub async fn connect_websocket(
        &self,
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<
        (
            tokio_tungstenite::WebSocketStream<
                tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
            >,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        tokio_tungstenite::tungstenite::Error,
    > {
        let connector = if self.base_url.starts_with("https://") {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(pem) = &self.ca_pem {
                use rustls::pki_types::pem::PemObject;
                for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(pem).flatten()
                {
                    let _ = roots.add(certificate);
                }
            }
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
                config,
            )))
        } else {
            None
        };
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector).await
    }

    /// The websocket URL and headers for a streaming endpoint.
    pub fn websocket_request(
        &self,
        path: &str,
    ) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, ClientError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}{path}", self.base_url.replacen("http", "ws", 1));
        let mut request = url
            .into_client_request()
            .map_err(|error| ClientError::Stream(error.to_string()))?;
        let headers = request.headers_mut();
        headers.insert(
            API_VERSION_HEADER,
            API_VERSION.parse().expect("static header value"),
        );
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| ClientError::Stream("the token is not a valid header value".into()))?;
            headers.insert("authorization", value);
        }
        Ok(request)
    }
}

/// Decodes a field of a response into a typed value.
pub fn field<T: DeserializeOwned>(body: &Value, name: &str) -> Result<T, ClientError> {
    let value = body.get(name).cloned().ok_or_else(|| ClientError::Decode {
        url: String::new(),
        detail: format!("the response has no '{name}' field"),
    })?;
    serde_json::from_value(value).map_err(|error| ClientError::Decode {
        url: String::new(),
        detail: format!("field '{name}': {error}"),
    })
}
