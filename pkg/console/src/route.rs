//! `/console/…` on the API port: `/console` redirects to `/console/`, `/console/v/<version>/<file>`
//! serves an embedded asset (cached for a year when the version is current), and every other path
//! serves `index.html` (no-cache) so the app's own routes load. Every answer carries a strict
//! Content-Security-Policy; bodies are gzipped when the client accepts it.

use futures::future::BoxFuture;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mini_apiserver::{Body, StreamingRoute};
use mini_rbac::UserInfo;

use crate::assets::{Asset, Assets};

/// The URL prefix the console lives under.
pub const PREFIX: &str = "/console";

const LONG_CACHE: &str = "public, max-age=31536000, immutable";
const NO_CACHE: &str = "no-cache";

/// Serves the embedded console.
#[derive(Debug)]
pub struct ConsoleRoute {
    assets: Assets,
}

impl ConsoleRoute {
    pub fn new(assets: Assets) -> Self {
        ConsoleRoute { assets }
    }

    /// The answer to one request (no I/O: everything is in memory).
    pub fn respond(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            let mut r = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "the console only answers GET\n",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return secured(r, headers);
        }
        let Some(rest) = path.strip_prefix(PREFIX) else {
            return secured(plain(StatusCode::NOT_FOUND, "not found\n"), headers);
        };
        if rest.is_empty() {
            let mut r = plain(StatusCode::PERMANENT_REDIRECT, "");
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/console/"));
            return secured(r, headers);
        }
        let response = match rest.strip_prefix("/v/") {
            Some(versioned) => {
                let (version, file) = versioned.split_once('/').unwrap_or((versioned, ""));
                match self.assets.files.get(file) {
                    Some(asset) => {
                        let cache = if version == self.assets.version {
                            LONG_CACHE
                        } else {
                            NO_CACHE
                        };
                        send(asset, cache, method, headers)
                    }
                    None => plain(StatusCode::NOT_FOUND, "no such console asset\n"),
                }
            }
            None => send(&self.assets.index, NO_CACHE, method, headers),
        };
        secured(response, headers)
    }
}

impl StreamingRoute for ConsoleRoute {
    fn handles(&self, path: &str) -> bool {
        path == PREFIX || path.starts_with("/console/")
    }

    fn handle(
        &self,
        req: Request<Body>,
        _peer: Option<UserInfo>,
    ) -> BoxFuture<'static, Response<Body>> {
        let response = self.respond(req.method(), req.uri().path(), req.headers());
        Box::pin(async move { response })
    }
}

fn body(bytes: impl Into<bytes::Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(body(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| p.replace(' ', "") == "q=0");
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

fn send(
    asset: &Asset,
    cache: &'static str,
    method: &Method,
    headers: &HeaderMap,
) -> Response<Body> {
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    let gzip = asset.gzip.as_ref().filter(|_| accepts_gzip(headers));
    let payload = gzip.unwrap_or(&asset.body).clone();
    let length = payload.len();
    let mut r = if not_modified {
        let mut r = Response::new(body(bytes::Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if method == Method::HEAD {
        Response::new(body(bytes::Bytes::new()))
    } else {
        Response::new(body(payload))
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        h.insert(header::ETAG, etag);
    }
    if !not_modified {
        if gzip.is_some() {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    r
}

/// The policy: everything from this server only, no inline script or style, no framing;
/// `connect-src` also names `wss://<host>` of the request (the terminal's exec stream).
pub fn content_security_policy(host: Option<&str>) -> String {
    let wss = host
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(|h| format!(" wss://{h}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         font-src 'self'; connect-src 'self'{wss}; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

fn secured(mut r: Response<Body>, request: &HeaderMap) -> Response<Body> {
    let host = request.get(header::HOST).and_then(|v| v.to_str().ok());
    let h = r.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(host)) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn route() -> ConsoleRoute {
        ConsoleRoute::new(Assets::prepare())
    }

    fn get(path: &str, headers: &[(&'static str, &str)]) -> Response<Body> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        route().respond(&Method::GET, path, &map)
    }

    fn bytes(r: Response<Body>) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { r.into_body().collect().await.unwrap().to_bytes().to_vec() })
    }

    fn header<'a>(r: &'a Response<Body>, name: &str) -> &'a str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn asset_path(file: &str) -> String {
        format!("/console/v/{}/{file}", Assets::prepare().version)
    }

    #[test]
    fn handles_only_console_paths() {
        let r = route();
        assert!(r.handles("/console"));
        assert!(r.handles("/console/nodes"));
        assert!(!r.handles("/consoles"));
        assert!(!r.handles("/api/v1/nodes"));
    }

    #[test]
    fn respond_bare_prefix_redirects_to_slash() {
        let r = get("/console", &[]);
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(header(&r, "location"), "/console/");
    }

    #[test]
    fn respond_root_serves_index_uncached() {
        let r = get("/console/", &[]);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&r, "cache-control"), "no-cache");
        assert!(String::from_utf8(bytes(r)).unwrap().contains("<html"));
    }

    #[test]
    fn respond_unknown_path_falls_back_to_index() {
        let r = get("/console/nodes/worker-1", &[]);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
        assert!(String::from_utf8(bytes(r)).unwrap().contains("app.js"));
    }

    #[test]
    fn respond_versioned_assets_have_types_and_long_cache() {
        for (file, ty) in [
            ("app.js", "text/javascript; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("favicon.svg", "image/svg+xml"),
        ] {
            let r = get(&asset_path(file), &[]);
            assert_eq!(r.status(), StatusCode::OK, "{file}");
            assert_eq!(header(&r, "content-type"), ty, "{file}");
            assert!(header(&r, "cache-control").contains("immutable"), "{file}");
        }
    }

    #[test]
    fn respond_old_version_is_not_cached_long() {
        let r = get("/console/v/000000000000/app.js", &[]);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "cache-control"), "no-cache");
    }

    #[test]
    fn respond_missing_asset_is_404_not_index() {
        let r = get(&asset_path("nope.js"), &[]);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn respond_every_answer_has_security_headers() {
        for path in ["/console", "/console/", "/console/x", &asset_path("app.js")] {
            let r = get(path, &[("host", "127.0.0.1:6443")]);
            let csp = header(&r, "content-security-policy");
            assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{path}");
            assert!(
                csp.contains("connect-src 'self' wss://127.0.0.1:6443"),
                "{path}"
            );
            assert!(!csp.contains("unsafe-inline"), "{path}");
            assert_eq!(header(&r, "x-content-type-options"), "nosniff");
            assert_eq!(header(&r, "referrer-policy"), "same-origin");
        }
    }

    #[test]
    fn content_security_policy_odd_host_is_left_out() {
        let csp = content_security_policy(Some("evil; script-src *"));
        assert!(!csp.contains("evil"));
        assert!(csp.contains("connect-src 'self';"));
    }

    #[test]
    fn respond_gzip_when_accepted() {
        let plain_body = bytes(get(&asset_path("app.js"), &[]));
        let r = get(&asset_path("app.js"), &[("accept-encoding", "br, gzip")]);
        assert_eq!(header(&r, "content-encoding"), "gzip");
        assert_eq!(header(&r, "vary"), "Accept-Encoding");
        let zipped = bytes(r);
        assert!(zipped.len() < plain_body.len());
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&zipped[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain_body);
    }

    #[test]
    fn respond_gzip_refused_with_q0() {
        let r = get(&asset_path("app.js"), &[("accept-encoding", "gzip;q=0")]);
        assert_eq!(header(&r, "content-encoding"), "");
    }

    #[test]
    fn respond_matching_etag_is_not_modified() {
        let first = get(&asset_path("style.css"), &[]);
        let etag = header(&first, "etag").to_string();
        let r = get(&asset_path("style.css"), &[("if-none-match", &etag)]);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert!(bytes(r).is_empty());
    }

    #[test]
    fn respond_post_is_refused() {
        let r = route().respond(&Method::POST, "/console/", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
