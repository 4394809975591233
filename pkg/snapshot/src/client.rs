//! The client side of `mini snapshot save`: asks the running server to save a snapshot.

use crate::dir::Entry;
use crate::route::SAVE_PATH;
use crate::SnapshotError;

/// Asks the server behind `client` (an admin kube client) to save snapshot `name`.
pub async fn save_via_server(
    client: &kube::Client,
    name: Option<&str>,
) -> Result<Entry, SnapshotError> {
    let uri = match name {
        Some(name) => format!("{SAVE_PATH}?name={name}"),
        None => SAVE_PATH.to_string(),
    };
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(uri)
        .body(Vec::new())
        .map_err(|e| SnapshotError::Client(format!("building the request: {e}")))?;
    let text = client.request_text(request).await.map_err(|e| match e {
        kube::Error::Api(status) => SnapshotError::Client(status.message),
        other => SnapshotError::Client(format!(
            "asking the server to save a snapshot: {other} (is the server running?)"
        )),
    })?;
    serde_json::from_str(&text).map_err(|e| {
        SnapshotError::Client(format!(
            "the server's answer to {SAVE_PATH} is not understood: {e}"
        ))
    })
}
