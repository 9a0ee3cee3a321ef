//! The documentation site at `/docs`: the mdBook built by `make docs`, embedded in the binary
//! when it is built with the `docs-site` feature (`make release` does), so a team without internet
//! still has its manual. Without the feature, `/docs` says how to get it.
//!
//! Owns nothing but serving those files. Must not read storage or anything of the server's: the
//! pages are public and static.

use axum::{
    Router,
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/book.rs"));
}

/// The content type of a book file, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("ttf") => "font/ttf",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn serve(path: &str) -> Response {
    if embedded::BOOK.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            "this Gofer was built without its manual: `make release` builds one with it (the \
             docs-site feature, after `make docs`); the pages are also in the docs/ folder",
        )
            .into_response();
    }
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_string()
    };
    let Some((_, bytes)) = embedded::BOOK.iter().find(|(name, _)| *name == path) else {
        return (StatusCode::NOT_FOUND, "no such page in the manual").into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&path)),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        *bytes,
    )
        .into_response()
}

/// `/docs`, `/docs/` and every page under it, to merge into the server's router outside `/api`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/docs", get(|| async { Redirect::permanent("/docs/") }))
        .route("/docs/", get(|| async { serve("") }))
        .route(
            "/docs/{*path}",
            get(|Path(path): Path<String>| async move { serve(&path) }),
        )
}

#[cfg(test)]
mod tests {
    #[test]
    fn pages_get_their_content_types() {
        assert_eq!(
            super::content_type("index.html"),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            super::content_type("css/chrome.css"),
            "text/css; charset=utf-8"
        );
        assert_eq!(
            super::content_type("searchindex"),
            "application/octet-stream"
        );
    }
}
