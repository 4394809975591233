//! The client side of `mini user`: requests to `/v1-mini/accounts` with the admin kubeconfig's
//! client, and reading a password from stdin or an interactive prompt.

use std::io::BufRead;

use serde_json::Value;

use crate::api::ACCOUNTS_PATH;
use crate::manage::{call, AccountInfo, AddRequest, PasswordRequest};
use crate::{password, AccountsError};

/// Reads the new password: the first line of stdin with `from_stdin`, else a prompt on the
/// terminal asked twice. Checks the length rule.
pub fn read_password(from_stdin: bool) -> Result<String, AccountsError> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| AccountsError::Client(format!("reading the password from stdin: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password("Password: ").map_err(|e| {
            AccountsError::Client(format!(
                "reading the password from the terminal: {e} (use --password-stdin without a terminal)"
            ))
        })?;
        let again = rpassword::prompt_password("Password again: ")
            .map_err(|e| AccountsError::Client(format!("reading the password again: {e}")))?;
        if first != again {
            return Err(AccountsError::Invalid("the passwords do not match".into()));
        }
        first
    };
    password::check_rules(&password)?;
    Ok(password)
}

fn json(value: &impl serde::Serialize) -> Result<Value, AccountsError> {
    serde_json::to_value(value).map_err(|e| AccountsError::Internal(e.to_string()))
}

/// `mini user add`.
pub async fn add(client: &kube::Client, req: &AddRequest) -> Result<AccountInfo, AccountsError> {
    let answer = call(client, http::Method::POST, ACCOUNTS_PATH, Some(&json(req)?)).await?;
    serde_json::from_value(answer)
        .map_err(|e| AccountsError::Client(format!("unexpected answer: {e}")))
}

/// `mini user passwd`.
pub async fn passwd(
    client: &kube::Client,
    name: &str,
    password: &str,
) -> Result<(), AccountsError> {
    let req = PasswordRequest {
        password: password.to_string(),
        current_password: None,
    };
    call(
        client,
        http::Method::PUT,
        &format!("{ACCOUNTS_PATH}/{name}/password"),
        Some(&json(&req)?),
    )
    .await
    .map(|_| ())
}

/// `mini user rm`.
pub async fn remove(client: &kube::Client, name: &str) -> Result<(), AccountsError> {
    call(
        client,
        http::Method::DELETE,
        &format!("{ACCOUNTS_PATH}/{name}"),
        None,
    )
    .await
    .map(|_| ())
}

/// `mini user ls`.
pub async fn list(client: &kube::Client) -> Result<Vec<AccountInfo>, AccountsError> {
    let answer = call(client, http::Method::GET, ACCOUNTS_PATH, None).await?;
    serde_json::from_value(answer["items"].clone())
        .map_err(|e| AccountsError::Client(format!("unexpected answer: {e}")))
}

/// The roles of an account as `mini user ls` prints them (`edit@a,edit@b`, `view`).
pub fn roles_text(info: &AccountInfo) -> String {
    if info.roles.is_empty() {
        return "<none>".into();
    }
    info.roles
        .iter()
        .map(|g| match &g.namespace {
            Some(ns) => format!("{}@{ns}", g.role),
            None => g.role.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}
