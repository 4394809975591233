//! What `/v1-mini/secrets-encrypt/*` answers and `mini secrets-encrypt` prints: the keys and
//! how many stored values use each, and the re-encryption pass under way or last finished.

use serde::{Deserialize, Serialize};

/// The whole state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Whether new values are sealed (`--secrets-encryption`).
    pub enabled: bool,
    pub config_path: String,
    /// One per entry of the configuration.
    pub resources: Vec<ResourceStatus>,
    /// The pass running now, or one interrupted and not yet resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<PassProgress>,
    /// The last pass that ended in this server process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pass: Option<PassOutcome>,
}

/// One entry of the configuration: its resources, write key and every key's use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    pub resources: Vec<String>,
    /// `provider:name`, or `identity` when new values are written plain.
    pub write_key: String,
    pub keys: Vec<KeyStatus>,
    /// Stored values that are not sealed.
    pub plain_values: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    pub provider: String,
    pub name: String,
    /// Stored values sealed with this key.
    pub values: u64,
    pub write: bool,
    /// False for a key that sealed stored values but is not in the configuration (those
    /// values cannot be read).
    pub configured: bool,
}

/// A pass under way (or interrupted: `running` false).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassProgress {
    pub run: u64,
    pub running: bool,
    /// The store prefix being walked and the last key done in it.
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    pub rewritten: u64,
    pub unchanged: u64,
    pub started: String,
    /// Whether this pass picked up where an interrupted one stopped.
    pub resumed: bool,
}

/// How a pass ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassOutcome {
    pub run: u64,
    /// `completed`, `interrupted` (the server stopped; it resumes at the next start) or
    /// `failed` (see `error`; it resumes when asked again).
    pub result: String,
    pub rewritten: u64,
    pub unchanged: u64,
    /// Keys removed from the configuration because no stored value uses them any more.
    pub retired: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub finished: String,
}

/// The answer to `rotate-keys` and `reencrypt`: the pass started and the write keys now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub run: u64,
    pub write_keys: Vec<String>,
}
