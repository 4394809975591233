//! Tests of which Leases count as live servers and of the Endpoints built from them.

use super::*;

fn lease(endpoint: &str, renewed_ms: i64, duration_s: i32) -> Lease {
    Lease {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([(
                ENDPOINT_ANNOTATION.to_string(),
                endpoint.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::from_millisecond(renewed_ms).unwrap())),
            lease_duration_seconds: Some(duration_s),
            ..Default::default()
        }),
    }
}

#[test]
fn live_endpoints_expired_lease_is_dropped() {
    let now = 1_000_000;
    let leases = [
        lease("10.0.0.2:6443", now - 1_000, 15),
        lease("10.0.0.1:6443", now - 14_000, 15),
        lease("10.0.0.3:6443", now - 15_000, 15),
    ];
    let live = live_endpoints(&leases, now);
    assert_eq!(
        live,
        vec![
            "10.0.0.1:6443".parse::<SocketAddr>().unwrap(),
            "10.0.0.2:6443".parse().unwrap()
        ]
    );
}

#[test]
fn live_endpoints_without_annotation_or_renewal_are_ignored() {
    let now = 1_000_000;
    let mut no_annotation = lease("10.0.0.1:6443", now, 15);
    no_annotation.metadata.annotations = None;
    let mut never_renewed = lease("10.0.0.2:6443", now, 15);
    never_renewed.spec.as_mut().unwrap().renew_time = None;
    let garbage = lease("not an address", now, 15);
    assert!(live_endpoints(&[no_annotation, never_renewed, garbage], now).is_empty());
}

#[test]
fn subsets_group_addresses_by_port() {
    let endpoints: Vec<SocketAddr> = vec![
        "10.0.0.1:6443".parse().unwrap(),
        "10.0.0.2:6443".parse().unwrap(),
        "10.0.0.3:7443".parse().unwrap(),
    ];
    let subsets = subsets(&endpoints);
    assert_eq!(subsets.len(), 2);
    let ips: Vec<&str> = subsets[0]
        .addresses
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| a.ip.as_str())
        .collect();
    assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 6443);
    assert_eq!(subsets[1].ports.as_ref().unwrap()[0].port, 7443);
}

#[test]
fn slice_parts_keep_the_most_common_port() {
    let endpoints: Vec<SocketAddr> = vec![
        "10.0.0.1:6443".parse().unwrap(),
        "10.0.0.2:6443".parse().unwrap(),
        "10.0.0.3:7443".parse().unwrap(),
    ];
    let (items, ports) = slice_parts(&endpoints);
    assert_eq!(items.len(), 2);
    assert_eq!(ports[0].port, Some(6443));
    assert_eq!(slice_parts(&[]).0.len(), 0);
}

#[test]
fn lease_name_is_a_dns_label() {
    let config = PeerConfig::new("Host_1.example_abc", "10.0.0.1:6443".parse().unwrap());
    assert_eq!(config.lease_name(), "apiserver-host-1-example-abc");
}
