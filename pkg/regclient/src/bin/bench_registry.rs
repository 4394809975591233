//! `mini-bench-registry`: manifest GETs per second against any registry with the mini client
//! (the same for docker-registry and mini's /v2/), for `scripts/bench.sh registry`.
//!
//! Usage: mini-bench-registry --url https://127.0.0.1:5000 --repository bench/big --reference 1
//!        [--ca FILE] [--cert FILE --key FILE] [--user U --password P] [--seconds 5] [--concurrency 8]
//! Prints one line: `manifest_gets_per_second <n> (<count> in <secs> s, concurrency <c>)`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mini_regclient::{ClientConfig, Credentials, RegistryClient};

#[derive(Default)]
struct Args {
    url: String,
    repository: String,
    reference: String,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    user: Option<String>,
    password: Option<String>,
    seconds: u64,
    concurrency: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 5,
        concurrency: 8,
        ..Default::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value()?,
            "--repository" => args.repository = value()?,
            "--reference" => args.reference = value()?,
            "--ca" => args.ca = Some(value()?),
            "--cert" => args.cert = Some(value()?),
            "--key" => args.key = Some(value()?),
            "--user" => args.user = Some(value()?),
            "--password" => args.password = Some(value()?),
            "--seconds" => {
                args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--concurrency" => {
                args.concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.url.is_empty() || args.repository.is_empty() || args.reference.is_empty() {
        return Err("--url, --repository and --reference are required".into());
    }
    Ok(args)
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

async fn run(args: Args) -> Result<(), String> {
    let mut config = ClientConfig::new(&args.url);
    config.ca_pem = args.ca.as_deref().map(read).transpose()?;
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        config.client_cert = Some(mini_certs::IssuedCert {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        });
    }
    if let (Some(username), Some(password)) = (args.user.clone(), args.password.clone()) {
        config.credentials = Credentials::Basic { username, password };
    }
    let client = Arc::new(RegistryClient::new(config).map_err(|e| e.to_string())?);
    // One GET first: fails fast with the registry's message.
    client
        .get_manifest(&args.repository, &args.reference)
        .await
        .map_err(|e| e.to_string())?;
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds.max(1));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let client = client.clone();
        let count = count.clone();
        let repo = args.repository.clone();
        let reference = args.reference.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                client
                    .get_manifest(&repo, &reference)
                    .await
                    .map_err(|e| e.to_string())?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed);
    println!(
        "manifest_gets_per_second {:.0} ({n} in {secs:.1} s, concurrency {})",
        n as f64 / secs,
        args.concurrency
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let result = parse_args().and_then(|args| {
        tokio::runtime::Runtime::new()
            .map_err(|e| e.to_string())?
            .block_on(run(args))
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mini-bench-registry: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
