//! What a LoadTest's `target` names (a Service, an Ingress or a URL) and the parsed `http://`
//! URL the generators send to.

/// A target as written in `spec.target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `svc/NAME[:PORT][/PATH]`: the Service's cluster IP, its first (or the named) port.
    Service {
        name: String,
        port: Option<String>,
        path: String,
    },
    /// `ingress/NAME[/PATH]`: the Ingress's address with its first rule's host.
    Ingress { name: String, path: String },
    /// An `http://` URL, used as it is.
    Url(HttpUrl),
}

/// A parsed `http://host[:port]/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|_| format!("{text:?} is not a URL (write e.g. http://10.0.0.5:8080/path)"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "{text:?}: the generators speak plain HTTP/1.1 only, not {other}; point them at an http:// address"
                ))
            }
            None => return Err(format!("{text:?} has no scheme: write http://{text}")),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{text:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        Ok(HttpUrl {
            host,
            port: uri.port_u16().unwrap_or(80),
            path,
        })
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

fn split_path(rest: &str) -> (&str, String) {
    match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    }
}

fn check_name(kind: &str, name: &str, text: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!("{text:?}: {name:?} is not a valid {kind} name"))
    }
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        let text = text.trim();
        if text.contains("://") {
            return HttpUrl::parse(text).map(Target::Url);
        }
        let (kind, rest) = text.split_once('/').ok_or_else(|| {
            format!("target {text:?}: write svc/NAME[:PORT][/PATH], ingress/NAME[/PATH] or an http:// URL")
        })?;
        match kind {
            "svc" | "service" | "services" => {
                let (name_port, path) = split_path(rest);
                let (name, port) = match name_port.split_once(':') {
                    Some((n, p)) if !p.is_empty() => (n, Some(p.to_string())),
                    Some(_) => return Err(format!("target {text:?}: the port after ':' is empty")),
                    None => (name_port, None),
                };
                check_name("Service", name, text)?;
                Ok(Target::Service {
                    name: name.to_string(),
                    port,
                    path,
                })
            }
            "ing" | "ingress" | "ingresses" => {
                let (name, path) = split_path(rest);
                check_name("Ingress", name, text)?;
                Ok(Target::Ingress {
                    name: name.to_string(),
                    path,
                })
            }
            other => Err(format!(
                "target {text:?}: unknown kind {other:?}; write svc/NAME, ingress/NAME or an http:// URL"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_service_with_port_and_path_parses() {
        assert_eq!(
            Target::parse("svc/web:8080/healthz").unwrap(),
            Target::Service {
                name: "web".into(),
                port: Some("8080".into()),
                path: "/healthz".into()
            }
        );
        assert_eq!(
            Target::parse("svc/web").unwrap(),
            Target::Service {
                name: "web".into(),
                port: None,
                path: "/".into()
            }
        );
    }

    #[test]
    fn target_url_keeps_query_and_default_port() {
        let Target::Url(u) = Target::parse("http://10.0.0.1/a?b=1").unwrap() else {
            panic!("url")
        };
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.0.0.1", 80, "/a?b=1")
        );
        assert_eq!(u.to_string(), "http://10.0.0.1/a?b=1");
    }

    #[test]
    fn target_https_and_unknown_kinds_are_rejected() {
        assert!(Target::parse("https://x/")
            .unwrap_err()
            .contains("plain HTTP"));
        assert!(Target::parse("pod/x").unwrap_err().contains("unknown kind"));
        assert!(Target::parse("web").is_err());
        assert!(Target::parse("svc/Web").is_err());
    }
}
