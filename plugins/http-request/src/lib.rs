//! `http-request`: a shared task that makes one HTTP request through `wasi:http`, to hosts the
//! operator granted (`[plugins.grants.http-request] http_hosts = [...]`), prints the status line
//! and the body, and exits 0 when the status is expected, 1 when not, 2 for bad settings, 3 when
//! the request could not be made (refused host, connection error).

use gofer_sdk::plugin::{Info, Kind, Pairs, Task};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

/// Most of the response body that is printed.
const MAX_BODY: usize = 1024 * 1024;

struct HttpRequest;

struct Settings {
    url: String,
    method: Method,
    headers: Vec<(String, String)>,
    body: Option<String>,
    expect: Vec<String>,
}

fn parse(settings: Pairs) -> Result<Settings, String> {
    let mut parsed = Settings {
        url: String::new(),
        method: Method::Get,
        headers: Vec::new(),
        body: None,
        expect: vec!["2xx".into()],
    };
    for (key, value) in settings {
        match key.as_str() {
            "url" => parsed.url = value,
            "method" => {
                parsed.method = match value.to_ascii_uppercase().as_str() {
                    "GET" => Method::Get,
                    "POST" => Method::Post,
                    "PUT" => Method::Put,
                    "PATCH" => Method::Patch,
                    "DELETE" => Method::Delete,
                    "HEAD" => Method::Head,
                    other => return Err(format!("unknown method '{other}'")),
                }
            }
            "body" => parsed.body = Some(value),
            "expect_status" => {
                parsed.expect = value
                    .split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .collect()
            }
            header if header.starts_with("header.") => parsed
                .headers
                .push((header["header.".len()..].to_string(), value)),
            other => {
                return Err(format!(
                    "unknown setting '{other}' (url, method, body, expect_status, header.NAME)"
                ));
            }
        }
    }
    if parsed.url.is_empty() {
        return Err("the setting 'url' is required".into());
    }
    Ok(parsed)
}

fn expected(status: u16, patterns: &[String]) -> bool {
    patterns
        .iter()
        .any(|pattern| match pattern.strip_suffix("xx") {
            Some(class) => class
                .parse::<u16>()
                .is_ok_and(|class| status / 100 == class),
            None => pattern.parse::<u16>().is_ok_and(|code| code == status),
        })
}

fn send(settings: &Settings) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = if let Some(rest) = settings.url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = settings.url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(format!(
            "bad settings: url '{}' must start with http:// or https://",
            settings.url
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    for (name, value) in &settings.headers {
        headers
            .append(name, value.as_bytes())
            .map_err(|error| format!("bad settings: header '{name}': {error:?}"))?;
    }
    let request = OutgoingRequest::new(headers);
    request
        .set_method(&settings.method)
        .map_err(|()| "bad settings: method".to_string())?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad settings: scheme".to_string())?;
    request
        .set_authority(Some(authority))
        .map_err(|()| format!("bad settings: host '{authority}'"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| format!("bad settings: path '{path}'"))?;
    let body = request
        .body()
        .map_err(|()| "could not open the request body".to_string())?;
    if let Some(text) = &settings.body {
        let stream = body
            .write()
            .map_err(|()| "could not write the request body".to_string())?;
        for chunk in text.as_bytes().chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|error| format!("could not send the body: {error:?}"))?;
        }
        drop(stream);
    }
    OutgoingBody::finish(body, None)
        .map_err(|error| format!("could not finish the body: {error:?}"))?;
    let pending = outgoing_handler::handle(request, None)
        .map_err(|error| format!("request not made: {error:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "the response was already taken".to_string())?
        .map_err(|error| format!("request not made: {error:?}"))?;
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|()| "could not read the response body".to_string())?;
    let stream = incoming
        .stream()
        .map_err(|()| "could not read the response body".to_string())?;
    let mut received = Vec::new();
    while received.len() < MAX_BODY {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => received.extend_from_slice(&chunk),
            Err(_) => break,
        }
    }
    Ok((status, received))
}

impl Task for HttpRequest {
    fn info() -> Info {
        Info::new("http-request", Kind::Task, env!("CARGO_PKG_VERSION"), "Makes one HTTP request to a host the operator allows.")
            .setting("url", true, "http:// or https:// URL; its host must be granted in plugins.grants.http-request.http_hosts")
            .setting("method", false, "GET (default), POST, PUT, PATCH, DELETE or HEAD")
            .setting("body", false, "The request body")
            .setting("header.NAME", false, "A request header")
            .setting("expect_status", false, "Expected statuses, e.g. \"2xx\" (default) or \"200,404\"")
    }

    fn run(settings: Pairs) -> Result<u8, String> {
        let settings = match parse(settings) {
            Ok(settings) => settings,
            Err(message) => {
                println!("bad settings: {message}");
                return Ok(2);
            }
        };
        match send(&settings) {
            Ok((status, body)) => {
                println!("HTTP {status}");
                println!("{}", String::from_utf8_lossy(&body));
                Ok(if expected(status, &settings.expect) {
                    0
                } else {
                    1
                })
            }
            Err(message) if message.starts_with("bad settings") => {
                println!("{message}");
                Ok(2)
            }
            Err(message) => {
                println!("{message}");
                Ok(3)
            }
        }
    }
}

gofer_sdk::export_task!(HttpRequest);
