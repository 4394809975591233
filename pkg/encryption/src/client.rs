//! The client side of `mini secrets-encrypt`: calls the server's endpoints with an admin
//! kube client, waits for a pass to end, and renders the status as text.

use std::fmt::Write;
use std::time::Duration;

use crate::route::{REENCRYPT_PATH, ROTATE_PATH, STATUS_PATH};
use crate::status::{PassOutcome, Started, Status};
use crate::EncryptionError;

fn client_error(e: kube::Error) -> EncryptionError {
    match e {
        kube::Error::Api(status) => EncryptionError::Client(status.message),
        other => EncryptionError::Client(format!("asking the server: {other}")),
    }
}

async fn call<T: serde::de::DeserializeOwned>(
    client: &kube::Client,
    method: http::Method,
    path: &str,
) -> Result<T, EncryptionError> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(Vec::new())
        .map_err(|e| EncryptionError::Client(format!("building the request: {e}")))?;
    let text = client.request_text(request).await.map_err(client_error)?;
    serde_json::from_str(&text).map_err(|e| {
        EncryptionError::Client(format!(
            "the server's answer to {path} is not understood: {e}"
        ))
    })
}

/// Keys, their use and the passes.
pub async fn status(client: &kube::Client) -> Result<Status, EncryptionError> {
    call(client, http::Method::GET, STATUS_PATH).await
}

/// A new write key and the pass that moves every value to it.
pub async fn rotate_keys(client: &kube::Client) -> Result<Started, EncryptionError> {
    call(client, http::Method::POST, ROTATE_PATH).await
}

/// A pass that moves every value to the write keys and retires unused keys.
pub async fn reencrypt(client: &kube::Client) -> Result<Started, EncryptionError> {
    call(client, http::Method::POST, REENCRYPT_PATH).await
}

/// Polls the status until pass `run` has ended; `Err` unless it completed.
pub async fn wait(
    client: &kube::Client,
    run: u64,
    every: Duration,
) -> Result<PassOutcome, EncryptionError> {
    loop {
        let status = status(client).await.map_err(|e| {
            EncryptionError::Client(format!(
                "{e} (the pass goes on in the server; see mini secrets-encrypt status)"
            ))
        })?;
        if let Some(last) = status.last_pass.filter(|l| l.run >= run) {
            return match last.result.as_str() {
                "completed" => Ok(last),
                "interrupted" => Err(EncryptionError::Client(
                    "the pass was interrupted because the server is stopping; it resumes when the server starts again".into(),
                )),
                _ => Err(EncryptionError::Client(format!(
                    "the re-encryption pass failed: {}",
                    last.error.unwrap_or_else(|| "no reason given".into())
                ))),
            };
        }
        tokio::time::sleep(every).await;
    }
}

/// One line about an ended pass.
pub fn render_outcome(outcome: &PassOutcome) -> String {
    let mut line = format!(
        "pass {} {}: {} values rewritten, {} already on the write key",
        outcome.run, outcome.result, outcome.rewritten, outcome.unchanged
    );
    if !outcome.retired.is_empty() {
        let _ = write!(line, "; retired {}", outcome.retired.join(", "));
    }
    if let Some(e) = &outcome.error {
        let _ = write!(line, "; error: {e}");
    }
    line
}

/// The status as text for a terminal.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "encryption: {}",
        if status.enabled {
            "on (new values are sealed with the write key)"
        } else {
            "off (--secrets-encryption=false: new values are written plain; configured keys still read)"
        }
    );
    let _ = writeln!(out, "config: {}", status.config_path);
    if status.resources.is_empty() {
        let _ = writeln!(out, "no resources are encrypted (no configuration)");
    }
    for entry in &status.resources {
        let _ = writeln!(out, "resources: {}", entry.resources.join(", "));
        let _ = writeln!(out, "  write key: {}", entry.write_key);
        let width = entry
            .keys
            .iter()
            .map(|k| k.provider.len() + k.name.len() + 1)
            .max()
            .unwrap_or(0)
            .max("identity (plain)".len());
        let _ = writeln!(out, "  {:<width$}  VALUES", "KEY");
        for key in &entry.keys {
            let name = format!("{}:{}", key.provider, key.name);
            let mut note = String::new();
            if key.write {
                note.push_str("  write");
            }
            if !key.configured {
                note.push_str("  NOT IN THE CONFIGURATION: these values cannot be read");
            }
            let _ = writeln!(out, "  {name:<width$}  {}{note}", key.values);
        }
        let _ = writeln!(
            out,
            "  {:<width$}  {}",
            "identity (plain)", entry.plain_values
        );
    }
    match &status.pass {
        Some(p) if p.running => {
            let _ = writeln!(
                out,
                "pass: run {} running{} since {}: {} rewritten, {} unchanged, at {}{}",
                p.run,
                if p.resumed { " (resumed)" } else { "" },
                p.started,
                p.rewritten,
                p.unchanged,
                p.prefix,
                p.after.as_deref().unwrap_or("")
            );
        }
        Some(p) => {
            let _ = writeln!(
                out,
                "pass: unfinished (started {}, stopped after {}); it resumes at the next server start or with mini secrets-encrypt reencrypt",
                p.started,
                p.after.as_deref().unwrap_or(&p.prefix)
            );
        }
        None => {
            let _ = writeln!(out, "pass: none running");
        }
    }
    if let Some(last) = &status.last_pass {
        let _ = writeln!(
            out,
            "last pass: {} (finished {})",
            render_outcome(last),
            last.finished
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{KeyStatus, ResourceStatus};

    #[test]
    fn render_lists_keys_counts_and_the_last_pass() {
        let status = Status {
            enabled: true,
            config_path: "/d/server/cred/encryption-config.json".into(),
            resources: vec![ResourceStatus {
                resources: vec!["secrets".into()],
                write_key: "aesgcm:key-2".into(),
                keys: vec![
                    KeyStatus {
                        provider: "aesgcm".into(),
                        name: "key-2".into(),
                        values: 7,
                        write: true,
                        configured: true,
                    },
                    KeyStatus {
                        provider: "secretbox".into(),
                        name: "lost".into(),
                        values: 1,
                        write: false,
                        configured: false,
                    },
                ],
                plain_values: 2,
            }],
            pass: None,
            last_pass: Some(PassOutcome {
                run: 1,
                result: "completed".into(),
                rewritten: 7,
                unchanged: 0,
                retired: vec!["aesgcm:key-1".into()],
                error: None,
                finished: "2026-12-05T12:00:00Z".into(),
            }),
        };
        let text = render(&status);
        assert!(text.contains("encryption: on"), "{text}");
        assert!(text.contains("write key: aesgcm:key-2"), "{text}");
        assert!(text.contains("aesgcm:key-2      7  write"), "{text}");
        assert!(
            text.contains("secretbox:lost    1  NOT IN THE CONFIGURATION"),
            "{text}"
        );
        assert!(text.contains("identity (plain)  2"), "{text}");
        assert!(text.contains("retired aesgcm:key-1"), "{text}");
    }
}
