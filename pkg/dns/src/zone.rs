//! The cluster zone: turns a question about `<domain>` into records from the watch cache,
//! following the Kubernetes DNS specification (services, headless endpoints, SRV, ExternalName,
//! pods), or says that the question belongs upstream.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::cache::{read, ClusterCache, ServiceKind};

/// What the zone says about a question.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// NOERROR with these answers (and additional records, e.g. SRV targets' addresses).
    Answer {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists but has no record of the asked type: NOERROR, SOA in authority.
    NoData,
    /// The name does not exist in the zone: NXDOMAIN, SOA in authority.
    NxDomain,
    /// An ExternalName: this CNAME, then whatever `target` resolves to for the same type.
    Alias { cname: Box<Record>, target: Name },
    /// The cache has not been filled yet: SERVFAIL, the client retries.
    NotReady,
    /// Not in the cluster domain: ask the upstreams.
    Forward,
}

/// The authoritative cluster domain.
pub(crate) struct Zone {
    origin: Name,
    domain: String,
    ttl: u32,
    soa: Record,
}

impl Zone {
    /// `domain` like `cluster.local`; records carry `ttl` seconds.
    pub fn new(domain: &str, ttl: u32) -> Result<Zone, hickory_proto::ProtoError> {
        let domain = domain.trim_matches('.').to_ascii_lowercase();
        let origin = Name::from_ascii(format!("{domain}."))?;
        let soa = Record::from_rdata(
            origin.clone(),
            ttl,
            RData::SOA(SOA::new(
                Name::from_ascii(format!("ns.dns.{domain}."))?,
                Name::from_ascii(format!("hostmaster.{domain}."))?,
                1,
                7200,
                1800,
                86400,
                ttl,
            )),
        );
        Ok(Zone {
            origin,
            domain,
            ttl,
            soa,
        })
    }

    /// The SOA record put in the authority section of negative answers.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    pub fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name)
    }

    fn name(&self, relative: &str) -> Option<Name> {
        Name::from_ascii(format!("{relative}.{}.", self.domain)).ok()
    }

    fn record(&self, name: &Name, rdata: RData) -> Record {
        Record::from_rdata(name.clone(), self.ttl, rdata)
    }

    fn address(&self, name: &Name, ip: IpAddr) -> Record {
        match ip {
            IpAddr::V4(v4) => self.record(name, RData::A(A(v4))),
            IpAddr::V6(v6) => self.record(name, RData::AAAA(AAAA(v6))),
        }
    }

    /// Answers `qtype` for `name` (as asked, any case) from `cache`.
    pub fn resolve(&self, cache: &ClusterCache, name: &Name, qtype: RecordType) -> Outcome {
        if !self.contains(name) {
            return Outcome::Forward;
        }
        if !cache.is_synced() {
            return Outcome::NotReady;
        }
        let lower = name.to_lowercase();
        let relative = usize::from(lower.num_labels()) - usize::from(self.origin.num_labels());
        let labels: Vec<String> = lower
            .iter()
            .take(relative)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        match labels.as_slice() {
            [] => match qtype {
                RecordType::SOA => self.answer(vec![self.soa.clone()]),
                RecordType::NS => match self.name("ns.dns") {
                    Some(ns) => self.answer(vec![self.record(name, RData::NS(NS(ns)))]),
                    None => Outcome::NoData,
                },
                _ => Outcome::NoData,
            },
            ["svc"] | ["pod"] => Outcome::NoData,
            [ns, "svc"] => {
                if read(&cache.services).namespace_has_services(ns) {
                    Outcome::NoData
                } else {
                    Outcome::NxDomain
                }
            }
            [svc, ns, "svc"] => self.service(cache, name, qtype, ns, svc),
            [endpoint, svc, ns, "svc"] if !endpoint.starts_with('_') => {
                self.endpoint(cache, name, qtype, ns, svc, endpoint)
            }
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv_port(cache, name, qtype, ns, svc, &port[1..], &proto[1..])
            }
            [ip, ns, "pod"] => match parse_dashed_ip(ip) {
                Some(ip) if read(&cache.pods).has_ip(ns, ip) => self.addresses(name, qtype, [ip]),
                _ => Outcome::NxDomain,
            },
            _ => Outcome::NxDomain,
        }
    }

    fn answer(&self, answers: Vec<Record>) -> Outcome {
        if answers.is_empty() {
            Outcome::NoData
        } else {
            Outcome::Answer {
                answers,
                additionals: Vec::new(),
            }
        }
    }

    /// A/AAAA (or NODATA for other types) for a name that owns `ips`.
    fn addresses(
        &self,
        name: &Name,
        qtype: RecordType,
        ips: impl IntoIterator<Item = IpAddr>,
    ) -> Outcome {
        let answers = ips
            .into_iter()
            .filter(|ip| wants(qtype, ip))
            .map(|ip| self.address(name, ip))
            .collect();
        self.answer(answers)
    }

    fn service(
        &self,
        cache: &ClusterCache,
        name: &Name,
        qtype: RecordType,
        ns: &str,
        svc: &str,
    ) -> Outcome {
        let Some(info) = read(&cache.services).get(ns, svc) else {
            return Outcome::NxDomain;
        };
        match &info.kind {
            ServiceKind::ExternalName(target) => match Name::from_ascii(format!("{target}.")) {
                Ok(target) => Outcome::Alias {
                    cname: Box::new(self.record(name, RData::CNAME(CNAME(target.clone())))),
                    target,
                },
                Err(_) => Outcome::NoData,
            },
            ServiceKind::ClusterIp(ips) => match qtype {
                RecordType::SRV => {
                    let ports: Vec<(u16, Name)> =
                        info.ports.iter().map(|p| (p.port, name.clone())).collect();
                    let additionals = ips.iter().map(|ip| self.address(name, *ip)).collect();
                    self.srv(name, ports, additionals)
                }
                _ => self.addresses(name, qtype, ips.iter().copied()),
            },
            ServiceKind::Headless => {
                let endpoints = self.ready_endpoints(cache, ns, svc);
                match qtype {
                    RecordType::SRV => {
                        let ports: BTreeSet<u16> = read(&cache.slices)
                            .slices(ns, svc)
                            .iter()
                            .flat_map(|s| s.ports.iter().map(|p| p.port))
                            .collect();
                        self.headless_srv(name, &endpoints, ports)
                    }
                    _ => self.addresses(name, qtype, endpoints.iter().map(|(_, ip)| *ip)),
                }
            }
        }
    }

    /// Ready endpoint addresses of a Service with the name each answers to (its hostname, or
    /// its address with dashes), in a stable order without duplicates.
    fn ready_endpoints(&self, cache: &ClusterCache, ns: &str, svc: &str) -> Vec<(String, IpAddr)> {
        let mut seen = BTreeSet::new();
        for slice in read(&cache.slices).slices(ns, svc) {
            for ep in slice.endpoints.iter().filter(|e| e.ready) {
                for ip in &ep.addresses {
                    let label = ep.hostname.clone().unwrap_or_else(|| dashed_ip(*ip));
                    seen.insert((label, *ip));
                }
            }
        }
        seen.into_iter().collect()
    }

    fn endpoint(
        &self,
        cache: &ClusterCache,
        name: &Name,
        qtype: RecordType,
        ns: &str,
        svc: &str,
        endpoint: &str,
    ) -> Outcome {
        let Some(info) = read(&cache.services).get(ns, svc) else {
            return Outcome::NxDomain;
        };
        if info.kind != ServiceKind::Headless {
            return Outcome::NxDomain;
        }
        let ips: Vec<IpAddr> = self
            .ready_endpoints(cache, ns, svc)
            .into_iter()
            .filter(|(label, _)| label == endpoint)
            .map(|(_, ip)| ip)
            .collect();
        if ips.is_empty() {
            return Outcome::NxDomain;
        }
        self.addresses(name, qtype, ips)
    }

    #[allow(clippy::too_many_arguments)]
    fn srv_port(
        &self,
        cache: &ClusterCache,
        name: &Name,
        qtype: RecordType,
        ns: &str,
        svc: &str,
        port: &str,
        proto: &str,
    ) -> Outcome {
        let Some(info) = read(&cache.services).get(ns, svc) else {
            return Outcome::NxDomain;
        };
        let Some(service_name) = self.name(&format!("{svc}.{ns}.svc")) else {
            return Outcome::NxDomain;
        };
        let matches = |p: &crate::cache::PortInfo| {
            !p.name.is_empty() && p.name.eq_ignore_ascii_case(port) && p.protocol == proto
        };
        match &info.kind {
            ServiceKind::ExternalName(_) => Outcome::NxDomain,
            ServiceKind::ClusterIp(ips) => {
                let ports: Vec<(u16, Name)> = info
                    .ports
                    .iter()
                    .filter(|p| matches(p))
                    .map(|p| (p.port, service_name.clone()))
                    .collect();
                if ports.is_empty() {
                    return Outcome::NxDomain;
                }
                if qtype != RecordType::SRV {
                    return Outcome::NoData;
                }
                let additionals = ips
                    .iter()
                    .map(|ip| self.address(&service_name, *ip))
                    .collect();
                self.srv(name, ports, additionals)
            }
            ServiceKind::Headless => {
                let declared = info.ports.iter().any(matches);
                let ports: BTreeSet<u16> = read(&cache.slices)
                    .slices(ns, svc)
                    .iter()
                    .flat_map(|s| s.ports.iter().filter(|p| matches(p)).map(|p| p.port))
                    .collect();
                if ports.is_empty() && !declared {
                    return Outcome::NxDomain;
                }
                if qtype != RecordType::SRV {
                    return Outcome::NoData;
                }
                let endpoints = self.ready_endpoints(cache, ns, svc);
                self.headless_srv(name, &endpoints, ports)
            }
        }
    }

    /// SRV records for every (endpoint, port), targets `<label>.<svc>.<ns>.svc.<domain>` with
    /// their addresses in the additional section.
    fn headless_srv(
        &self,
        name: &Name,
        endpoints: &[(String, IpAddr)],
        ports: BTreeSet<u16>,
    ) -> Outcome {
        // the service name is the query name without `_port._proto.`
        let service = if name.num_labels() > 0
            && name.iter().next().is_some_and(|l| l.first() == Some(&b'_'))
        {
            name.base_name().base_name()
        } else {
            name.clone()
        };
        let mut targets = Vec::new();
        let mut additionals = Vec::new();
        for (label, ip) in endpoints {
            let Ok(target) = Name::from_ascii(label).and_then(|l| l.append_domain(&service)) else {
                continue;
            };
            additionals.push(self.address(&target, *ip));
            for port in &ports {
                targets.push((*port, target.clone()));
            }
        }
        self.srv(name, targets, additionals)
    }

    fn srv(&self, name: &Name, targets: Vec<(u16, Name)>, additionals: Vec<Record>) -> Outcome {
        if targets.is_empty() {
            return Outcome::NoData;
        }
        let weight = u16::try_from((100 / targets.len()).max(1)).unwrap_or(1);
        let answers = targets
            .into_iter()
            .map(|(port, target)| self.record(name, RData::SRV(SRV::new(0, weight, port, target))))
            .collect();
        Outcome::Answer {
            answers,
            additionals,
        }
    }
}

/// Whether a query of `qtype` wants address `ip` (A for v4, AAAA for v6, ANY for both).
fn wants(qtype: RecordType, ip: &IpAddr) -> bool {
    matches!(
        (qtype, ip),
        (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_)) | (RecordType::ANY, _)
    )
}

/// `10.42.0.5` -> `10-42-0-5`; `fd00::1` -> `fd00--1` (as the DNS specification names pods).
pub(crate) fn dashed_ip(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The inverse of [`dashed_ip`].
pub(crate) fn parse_dashed_ip(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{EndpointInfo, PortInfo, ServiceInfo, SliceInfo};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid ip")
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("valid name")
    }

    fn port(name: &str, port: u16) -> PortInfo {
        PortInfo {
            name: name.into(),
            protocol: "tcp".into(),
            port,
        }
    }

    fn cache() -> ClusterCache {
        let cache = ClusterCache::default();
        {
            let mut services = cache.services.write().expect("lock");
            services.insert(
                "default",
                "web",
                ServiceInfo {
                    kind: ServiceKind::ClusterIp(vec![ip("10.43.0.20"), ip("fd00::20")]),
                    ports: vec![port("http", 80), port("", 81)],
                },
            );
            services.insert(
                "default",
                "db",
                ServiceInfo {
                    kind: ServiceKind::Headless,
                    ports: vec![port("pg", 5432)],
                },
            );
            services.insert(
                "default",
                "alias",
                ServiceInfo {
                    kind: ServiceKind::ExternalName("web.default.svc.cluster.local".into()),
                    ports: vec![],
                },
            );
        }
        cache.slices.write().expect("lock").insert(
            "default",
            "db-x",
            SliceInfo {
                service: "db".into(),
                endpoints: vec![
                    EndpointInfo {
                        addresses: vec![ip("10.42.0.5")],
                        hostname: None,
                        ready: true,
                    },
                    EndpointInfo {
                        addresses: vec![ip("10.42.0.6")],
                        hostname: Some("db-1".into()),
                        ready: true,
                    },
                ],
                ports: vec![port("pg", 5432)],
            },
        );
        cache
            .pods
            .write()
            .expect("lock")
            .insert("default", "p", vec![ip("10.42.0.9")]);
        cache.mark_synced();
        cache
    }

    fn zone() -> Zone {
        Zone::new("cluster.local", 5).expect("valid zone")
    }

    fn answer_ips(outcome: &Outcome) -> Vec<IpAddr> {
        match outcome {
            Outcome::Answer { answers, .. } => answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(A(v4)) => Some(IpAddr::V4(*v4)),
                    RData::AAAA(AAAA(v6)) => Some(IpAddr::V6(*v6)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn resolve_names_outside_the_domain_are_forwarded() {
        let (z, c) = (zone(), cache());
        for n in ["example.com.", "cluster.local.example.com.", "local."] {
            assert_eq!(
                z.resolve(&c, &name(n), RecordType::A),
                Outcome::Forward,
                "{n}"
            );
        }
    }

    #[test]
    fn resolve_before_sync_is_not_ready() {
        let z = zone();
        let c = ClusterCache::default();
        assert_eq!(
            z.resolve(&c, &name("web.default.svc.cluster.local."), RecordType::A),
            Outcome::NotReady
        );
    }

    #[test]
    fn resolve_service_answers_per_family_in_any_case() {
        let (z, c) = (zone(), cache());
        let n = name("WEB.Default.svc.Cluster.Local.");
        assert_eq!(
            answer_ips(&z.resolve(&c, &n, RecordType::A)),
            vec![ip("10.43.0.20")]
        );
        assert_eq!(
            answer_ips(&z.resolve(&c, &n, RecordType::AAAA)),
            vec![ip("fd00::20")]
        );
        assert_eq!(z.resolve(&c, &n, RecordType::TXT), Outcome::NoData);
    }

    #[test]
    fn resolve_service_srv_lists_every_port() {
        let (z, c) = (zone(), cache());
        let Outcome::Answer { answers, .. } =
            z.resolve(&c, &name("web.default.svc.cluster.local."), RecordType::SRV)
        else {
            panic!("expected an answer");
        };
        let ports: Vec<u16> = answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(s.port),
                _ => None,
            })
            .collect();
        assert_eq!(ports, vec![80, 81]);
    }

    #[test]
    fn resolve_unnamed_or_wrong_protocol_port_is_nxdomain() {
        let (z, c) = (zone(), cache());
        for n in [
            "_http._udp.web.default.svc.cluster.local.",
            "_._tcp.web.default.svc.cluster.local.",
        ] {
            assert_eq!(
                z.resolve(&c, &name(n), RecordType::SRV),
                Outcome::NxDomain,
                "{n}"
            );
        }
        assert_eq!(
            z.resolve(
                &c,
                &name("_http._tcp.web.default.svc.cluster.local."),
                RecordType::A
            ),
            Outcome::NoData
        );
    }

    #[test]
    fn resolve_headless_endpoint_without_hostname_answers_to_its_dashed_ip() {
        let (z, c) = (zone(), cache());
        let n = name("10-42-0-5.db.default.svc.cluster.local.");
        assert_eq!(
            answer_ips(&z.resolve(&c, &n, RecordType::A)),
            vec![ip("10.42.0.5")]
        );
        let Outcome::Answer { answers, .. } = z.resolve(
            &c,
            &name("_pg._tcp.db.default.svc.cluster.local."),
            RecordType::SRV,
        ) else {
            panic!("expected an answer");
        };
        let targets: Vec<String> = answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(s.target.to_ascii()),
                _ => None,
            })
            .collect();
        assert_eq!(
            targets,
            vec![
                "10-42-0-5.db.default.svc.cluster.local.",
                "db-1.db.default.svc.cluster.local."
            ]
        );
    }

    #[test]
    fn resolve_endpoint_names_of_a_cluster_ip_service_are_nxdomain() {
        let (z, c) = (zone(), cache());
        assert_eq!(
            z.resolve(&c, &name("x.web.default.svc.cluster.local."), RecordType::A),
            Outcome::NxDomain
        );
    }

    #[test]
    fn resolve_external_name_is_an_alias_to_its_target() {
        let (z, c) = (zone(), cache());
        match z.resolve(&c, &name("alias.default.svc.cluster.local."), RecordType::A) {
            Outcome::Alias { target, .. } => {
                assert_eq!(target, name("web.default.svc.cluster.local."))
            }
            other => panic!("expected an alias, got {other:?}"),
        }
    }

    #[test]
    fn resolve_pods_only_with_a_known_ip_in_that_namespace() {
        let (z, c) = (zone(), cache());
        let known = name("10-42-0-9.default.pod.cluster.local.");
        assert_eq!(
            answer_ips(&z.resolve(&c, &known, RecordType::A)),
            vec![ip("10.42.0.9")]
        );
        assert_eq!(z.resolve(&c, &known, RecordType::AAAA), Outcome::NoData);
        for n in [
            "10-42-0-9.other.pod.cluster.local.",
            "10-42-0-10.default.pod.cluster.local.",
            "not-an-ip.default.pod.cluster.local.",
        ] {
            assert_eq!(
                z.resolve(&c, &name(n), RecordType::A),
                Outcome::NxDomain,
                "{n}"
            );
        }
    }

    #[test]
    fn resolve_namespaces_and_apex_exist_unknown_shapes_do_not() {
        let (z, c) = (zone(), cache());
        assert_eq!(
            z.resolve(&c, &name("default.svc.cluster.local."), RecordType::A),
            Outcome::NoData
        );
        assert_eq!(
            z.resolve(&c, &name("svc.cluster.local."), RecordType::A),
            Outcome::NoData
        );
        assert_eq!(
            z.resolve(&c, &name("cluster.local."), RecordType::A),
            Outcome::NoData
        );
        assert!(matches!(
            z.resolve(&c, &name("cluster.local."), RecordType::SOA),
            Outcome::Answer { .. }
        ));
        for n in [
            "empty.svc.cluster.local.",
            "foo.cluster.local.",
            "a.b.c.d.e.svc.cluster.local.",
            "web.default.svc.cluster.local.default.svc.cluster.local.",
        ] {
            assert_eq!(
                z.resolve(&c, &name(n), RecordType::A),
                Outcome::NxDomain,
                "{n}"
            );
        }
    }

    #[test]
    fn dashed_ip_round_trips_both_families() {
        for s in ["10.42.0.5", "fd00::1", "2001:db8::a:b"] {
            assert_eq!(parse_dashed_ip(&dashed_ip(ip(s))), Some(ip(s)), "{s}");
        }
        assert_eq!(parse_dashed_ip("web"), None);
    }
}
