//! Unit tests: renewal schedule, server-side renewal, rotate and CA rotation overlap.

use std::time::Duration;

use mini_certs::{CertAuthority, CertInfo, SubjectAltNames};

use crate::{check_interval, leaf_due, ServerCerts, ServerCertsConfig};

fn open(dir: &std::path::Path, lifetime: Duration) -> std::sync::Arc<ServerCerts> {
    ServerCerts::open(ServerCertsConfig {
        tls_dir: dir.to_path_buf(),
        sans: SubjectAltNames {
            dns: vec!["localhost".into()],
            ips: vec![std::net::Ipv4Addr::LOCALHOST.into()],
        },
        lifetime,
    })
    .unwrap()
}

fn info(pem: &str) -> CertInfo {
    CertInfo::from_pem(pem, "t").unwrap()
}

fn bundle_len(certs: &ServerCerts) -> usize {
    mini_certs::split_bundle(&certs.bundle_pem()).unwrap().len()
}

#[test]
fn check_interval_twentieth_of_life_within_bounds() {
    assert_eq!(
        check_interval(Duration::from_secs(120)),
        Duration::from_secs(6)
    );
    assert_eq!(
        check_interval(Duration::from_secs(10)),
        Duration::from_secs(1)
    );
    assert_eq!(
        check_interval(Duration::from_secs(365 * 86_400)),
        Duration::from_secs(60)
    );
}

#[test]
fn leaf_due_at_two_thirds_or_when_issued_before_a_rotate() {
    let ca = CertAuthority::generate("t").unwrap();
    let leaf = ca
        .issue_client_for("u", &[], Duration::from_secs(300))
        .unwrap();
    let i = info(&leaf.cert_pem);
    assert!(!leaf_due(&leaf.cert_pem, 0, i.renew_at() - 1));
    assert!(leaf_due(&leaf.cert_pem, 0, i.renew_at()));
    let now = i.issued_at();
    assert!(!leaf_due(&leaf.cert_pem, now, now));
    assert!(leaf_due(&leaf.cert_pem, now + 10, now));
    assert!(leaf_due("garbage", 0, 0));
}

#[test]
fn open_issues_leaves_with_the_configured_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let certs = open(dir.path(), Duration::from_secs(120));
    let pki = certs.pki().unwrap();
    for leaf in [&pki.serving, &pki.admin, &pki.apiserver_client] {
        let i = info(&leaf.cert_pem);
        assert!(i.not_after - i.not_before <= 135, "{i:?}");
    }
    // a restart with a longer lifetime keeps them; a shorter one re-issues them
    let again = open(dir.path(), Duration::from_secs(3600));
    assert_eq!(again.pki().unwrap().serving, pki.serving);
    let year = open(dir.path(), Duration::from_secs(365 * 86_400));
    assert_eq!(year.pki().unwrap().serving, pki.serving);
}

#[test]
fn tick_renews_due_leaves_and_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let certs = open(dir.path(), Duration::from_secs(600));
    let before = certs.pki().unwrap();
    let renew_at = info(&before.serving.cert_pem).renew_at();
    certs.tick(renew_at - 5).unwrap();
    assert_eq!(certs.pki().unwrap().serving, before.serving);
    certs.tick(renew_at + 1).unwrap();
    let after = certs.pki().unwrap();
    assert_ne!(after.serving, before.serving);
    assert_ne!(after.admin, before.admin);
    assert_ne!(after.apiserver_client, before.apiserver_client);
    // the files hold what is served, so a restart keeps it
    let on_disk = std::fs::read_to_string(dir.path().join("serving.crt")).unwrap();
    assert_eq!(on_disk, after.serving.cert_pem);
    // the serving certificate keeps its names
    let sans = mini_certs::cert_sans_of_pem(&after.serving.cert_pem).unwrap();
    assert!(sans.dns.contains(&"localhost".to_string()));
}

#[test]
fn rotate_renews_everything_now() {
    let dir = tempfile::tempdir().unwrap();
    let certs = open(dir.path(), Duration::from_secs(3600));
    let before = certs.pki().unwrap();
    let status = certs.rotate().unwrap();
    let after = certs.pki().unwrap();
    assert_ne!(after.serving, before.serving);
    assert_ne!(after.admin, before.admin);
    assert!(status.renew_issued_before > 0);
    assert_eq!(status.certificates.len(), 4);
}

#[test]
fn rotate_ca_overlaps_then_retires_the_old_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = open(dir.path(), Duration::from_secs(3600));
    let old = certs.ca();
    let old_serving = certs.pki().unwrap().serving;
    assert_eq!(bundle_len(&certs), 1);
    let status = certs.rotate_ca(Duration::from_secs(600)).unwrap();
    let new = certs.ca();
    assert_ne!(new.cert_pem(), old.cert_pem());
    // overlap: both trusted, leaves from the new CA carrying the cross-signed new CA
    assert_eq!(bundle_len(&certs), 2);
    let serving = certs.pki().unwrap().serving;
    let chain = mini_certs::split_bundle(&serving.cert_pem).unwrap();
    assert_eq!(chain.len(), 2);
    let leaf_der = mini_certs::CertInfo::from_pem(&chain[0], "leaf").unwrap();
    assert_eq!(leaf_der.issuer, info(new.cert_pem()).subject);
    assert_eq!(info(&chain[1]).issuer, info(old.cert_pem()).subject);
    assert_ne!(serving, old_serving);
    let retire_at = status.ca_retires_at.unwrap();
    // a second rotation during the overlap is refused
    assert!(certs.rotate_ca(Duration::from_secs(600)).is_err());
    // a restart in the overlap finds the same state
    let reopened = open(dir.path(), Duration::from_secs(3600));
    assert_eq!(bundle_len(&reopened), 2);
    assert_eq!(reopened.ca().cert_pem(), new.cert_pem());
    assert_eq!(reopened.status().unwrap().ca_retires_at, Some(retire_at));
    // the overlap ends: only the new CA, leaves without the cross certificate
    certs.tick(retire_at).unwrap();
    assert_eq!(bundle_len(&certs), 1);
    assert_eq!(certs.bundle_pem().trim(), new.cert_pem().trim());
    let chain = mini_certs::split_bundle(&certs.pki().unwrap().serving.cert_pem).unwrap();
    assert_eq!(chain.len(), 1);
    assert!(!dir.path().join("ca-previous.crt").exists());
    assert!(certs.status().unwrap().ca_retires_at.is_none());
    let reopened = open(dir.path(), Duration::from_secs(3600));
    assert_eq!(bundle_len(&reopened), 1);
}

/// The files a CA rotation changes, as the bootstrap data carries them between servers.
const SHARED_CA_FILES: &[&str] = &[
    "ca.crt",
    "ca.key",
    "ca-previous.crt",
    "ca-cross.crt",
    "rotation.json",
];

#[test]
fn reload_shared_takes_other_servers_rotation_and_reissues_leaves() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(one.path(), Duration::from_secs(3600));
    for file in ["ca.crt", "ca.key"] {
        std::fs::copy(one.path().join(file), two.path().join(file)).unwrap();
    }
    let b = open(two.path(), Duration::from_secs(3600));
    assert!(!b.reload_shared().unwrap());
    a.rotate_ca(Duration::from_secs(600)).unwrap();
    for file in SHARED_CA_FILES {
        std::fs::copy(one.path().join(file), two.path().join(file)).unwrap();
    }
    assert!(b.reload_shared().unwrap());
    assert_eq!(b.ca().cert_pem(), a.ca().cert_pem());
    assert_eq!(bundle_len(&b), 2);
    let new_ca = info(a.ca().cert_pem()).subject;
    let serving = std::fs::read_to_string(two.path().join(mini_certs::SERVING_CERT_FILE)).unwrap();
    assert_eq!(info(&serving).issuer, new_ca);
    assert!(b.status().unwrap().ca_retires_at.is_some());
    // nothing new: nothing to take
    assert!(!b.reload_shared().unwrap());
}

#[test]
fn open_previous_ca_without_overlap_end_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let certs = open(dir.path(), Duration::from_secs(3600));
    certs.rotate_ca(Duration::from_secs(600)).unwrap();
    drop(certs);
    // the overlap ended elsewhere; a stale copy of the previous CA came back with the data
    std::fs::write(dir.path().join("rotation.json"), "{}").unwrap();
    let reopened = open(dir.path(), Duration::from_secs(3600));
    assert_eq!(bundle_len(&reopened), 1);
}
