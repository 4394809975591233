//! Cross-site request checks for cookie-authenticated requests: a write must carry the
//! session's `X-CSRF-Token` and come from the server's own origin (`Origin`, else `Referer`).

use http::{header, HeaderMap, Method, Uri};
use subtle::ConstantTimeEq;

/// The header a page sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Whether `method` changes something (everything but GET, HEAD and OPTIONS).
pub fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The server's own origin as the client addressed it: `https://<Host>` (or the URI's
/// authority, for HTTP/2).
pub fn own_origin(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))?;
    Some(format!("https://{}", host.to_ascii_lowercase()))
}

/// Whether the request's `Origin` (or, without one, its `Referer`) is the server's own origin.
/// A request naming neither is refused.
pub fn origin_matches(uri: &Uri, headers: &HeaderMap) -> bool {
    let Some(own) = own_origin(uri, headers) else {
        return false;
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        return origin
            .to_str()
            .is_ok_and(|o| o.trim_end_matches('/').eq_ignore_ascii_case(&own));
    }
    if let Some(referer) = headers.get(header::REFERER).and_then(|r| r.to_str().ok()) {
        let referer = referer.to_ascii_lowercase();
        return referer == own
            || referer
                .strip_prefix(&own)
                .is_some_and(|rest| rest.starts_with('/'));
    }
    false
}

/// Whether the `X-CSRF-Token` header equals `expected` (compared in constant time).
pub fn token_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(sent) = headers.get(CSRF_HEADER) else {
        return false;
    };
    !expected.is_empty() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

/// Why a cookie-authenticated request is refused; `None` when it passes. Writes need the
/// token and the server's origin; a connection upgrade (a WebSocket `exec` or log stream,
/// which arrives as GET) needs the server's origin.
pub fn refusal(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    csrf: &str,
) -> Option<&'static str> {
    if headers.contains_key(header::UPGRADE) && !origin_matches(uri, headers) {
        return Some(
            "the upgrade request's Origin is not this server: cross-site connections are refused",
        );
    }
    if !is_write(method) {
        return None;
    }
    if !origin_matches(uri, headers) {
        return Some(
            "the request's Origin (or Referer) is not this server: cross-site requests are refused",
        );
    }
    if !token_matches(headers, csrf) {
        return Some(
            "the X-CSRF-Token header is missing or wrong: send the token the login returned",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn uri() -> Uri {
        "/api/v1/namespaces/a/pods".parse().unwrap()
    }

    #[test]
    fn refusal_get_without_token_passes() {
        assert_eq!(refusal(&Method::GET, &uri(), &HeaderMap::new(), "t"), None);
    }

    #[test]
    fn refusal_post_with_origin_and_token_passes() {
        let h = headers(&[
            ("host", "10.0.0.1:6443"),
            ("origin", "https://10.0.0.1:6443"),
            ("x-csrf-token", "tok"),
        ]);
        assert_eq!(refusal(&Method::POST, &uri(), &h, "tok"), None);
    }

    #[test]
    fn refusal_post_without_token_is_refused() {
        let h = headers(&[("host", "h:1"), ("origin", "https://h:1")]);
        assert!(refusal(&Method::POST, &uri(), &h, "tok").is_some());
        let h = headers(&[
            ("host", "h:1"),
            ("origin", "https://h:1"),
            ("x-csrf-token", "bad"),
        ]);
        assert!(refusal(&Method::DELETE, &uri(), &h, "tok").is_some());
    }

    #[test]
    fn refusal_foreign_origin_is_refused() {
        let h = headers(&[
            ("host", "h:1"),
            ("origin", "https://evil.example"),
            ("x-csrf-token", "tok"),
        ]);
        assert!(refusal(&Method::POST, &uri(), &h, "tok").is_some());
    }

    #[test]
    fn refusal_no_origin_uses_referer() {
        let ok = headers(&[
            ("host", "h:1"),
            ("referer", "https://h:1/console/"),
            ("x-csrf-token", "t"),
        ]);
        assert_eq!(refusal(&Method::PUT, &uri(), &ok, "t"), None);
        let bad = headers(&[
            ("host", "h:1"),
            ("referer", "https://h:1.evil/"),
            ("x-csrf-token", "t"),
        ]);
        assert!(refusal(&Method::PUT, &uri(), &bad, "t").is_some());
        let none = headers(&[("host", "h:1"), ("x-csrf-token", "t")]);
        assert!(refusal(&Method::PATCH, &uri(), &none, "t").is_some());
    }

    #[test]
    fn refusal_websocket_upgrade_needs_own_origin() {
        let foreign = headers(&[
            ("host", "h:1"),
            ("upgrade", "websocket"),
            ("origin", "https://evil.example"),
        ]);
        assert!(refusal(&Method::GET, &uri(), &foreign, "t").is_some());
        let own = headers(&[
            ("host", "h:1"),
            ("upgrade", "websocket"),
            ("origin", "https://h:1"),
        ]);
        assert_eq!(refusal(&Method::GET, &uri(), &own, "t"), None);
    }

    #[test]
    fn own_origin_http2_uses_authority() {
        let uri: Uri = "https://h2.example:6443/api".parse().unwrap();
        assert_eq!(
            own_origin(&uri, &HeaderMap::new()).as_deref(),
            Some("https://h2.example:6443")
        );
    }
}
