//! `http-request`: a shared task that makes one HTTP request through `wasi:http`, to hosts the
//! operator granted (`[plugins.grants.http-request] http_hosts = [...]`), prints the status line
//! and the body, and exits 0 when the status is expected, 1 when not, 2 for bad settings, 3 when
//! the request could not be made (refused host, connection error).

use gofer_sdk::plugin::{Info, Kind, Pairs, Task, http};

/// Most of the response body that is printed.
const MAX_BODY: usize = 1024 * 1024;

struct HttpRequest;

struct Settings {
    url: String,
    method: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    expect: Vec<String>,
}

fn parse(settings: Pairs) -> Result<Settings, String> {
    let mut parsed = Settings {
        url: String::new(),
        method: "GET".into(),
        headers: Vec::new(),
        body: None,
        expect: vec!["2xx".into()],
    };
    for (key, value) in settings {
        match key.as_str() {
            "url" => parsed.url = value,
            "method" => {
                let method = value.to_ascii_uppercase();
                if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(&method.as_str()) {
                    return Err(format!("unknown method '{method}'"));
                }
                parsed.method = method;
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
    let request = http::Request {
        method: settings.method.clone(),
        url: settings.url.clone(),
        headers: settings.headers.clone(),
        body: settings.body.clone().map(String::into_bytes),
        max_body: MAX_BODY,
    };
    match http::send(&request) {
        Ok(response) => Ok((response.status, response.body)),
        Err(http::Error::Invalid(message)) => Err(format!("bad settings: {message}")),
        Err(error) => Err(error.to_string()),
    }
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
