//! nftables data types (nft's `datatype.h` numbering) and how JSON values of each type are
//! laid out in registers, set keys and listings.

use serde_json::Value;

/// A data type of a set key or map value, or of what an expression loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    Verdict,
    Integer,
    Ipv4Addr,
    Ipv6Addr,
    InetProto,
    InetService,
    Mark,
    CtState,
    CtDir,
    CtStatus,
    FibAddrType,
    IfName,
}

impl Dtype {
    /// nft's type number (`TYPE_*`), used in `NFTA_SET_KEY_TYPE` (6 bits per concat field).
    pub fn id(self) -> u32 {
        match self {
            Dtype::Verdict => 1,
            Dtype::Integer => 4,
            Dtype::Ipv4Addr => 7,
            Dtype::Ipv6Addr => 8,
            Dtype::InetProto => 12,
            Dtype::InetService => 13,
            Dtype::Mark => 19,
            Dtype::CtState => 26,
            Dtype::CtDir => 27,
            Dtype::CtStatus => 28,
            Dtype::FibAddrType => 38,
            Dtype::IfName => 41,
        }
    }

    pub fn from_id(id: u32) -> Option<Dtype> {
        [
            Dtype::Verdict,
            Dtype::Integer,
            Dtype::Ipv4Addr,
            Dtype::Ipv6Addr,
            Dtype::InetProto,
            Dtype::InetService,
            Dtype::Mark,
            Dtype::CtState,
            Dtype::CtDir,
            Dtype::CtStatus,
            Dtype::FibAddrType,
            Dtype::IfName,
        ]
        .into_iter()
        .find(|t| t.id() == id)
    }

    /// The types a set may be declared with in JSON (`"type": "ipv4_addr"`).
    pub fn from_set_name(name: &str) -> Option<Dtype> {
        Some(match name {
            "ipv4_addr" => Dtype::Ipv4Addr,
            "ipv6_addr" => Dtype::Ipv6Addr,
            "inet_proto" => Dtype::InetProto,
            "inet_service" => Dtype::InetService,
            "mark" => Dtype::Mark,
            "ifname" => Dtype::IfName,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::Verdict => "verdict",
            Dtype::Integer => "integer",
            Dtype::Ipv4Addr => "ipv4_addr",
            Dtype::Ipv6Addr => "ipv6_addr",
            Dtype::InetProto => "inet_proto",
            Dtype::InetService => "inet_service",
            Dtype::Mark => "mark",
            Dtype::CtState => "ct_state",
            Dtype::CtDir => "ct_dir",
            Dtype::CtStatus => "ct_status",
            Dtype::FibAddrType => "fib_addrtype",
            Dtype::IfName => "ifname",
        }
    }

    /// Bytes the value takes (before register padding).
    pub fn len(self) -> usize {
        match self {
            Dtype::Verdict => 0,
            Dtype::InetProto | Dtype::CtDir => 1,
            Dtype::InetService => 2,
            Dtype::Ipv6Addr | Dtype::IfName => 16,
            _ => 4,
        }
    }

    /// nft's byte order of the type: 1 host, 2 big endian (0 for verdicts), as recorded in
    /// set userdata.
    pub fn byteorder(self) -> u32 {
        match self {
            Dtype::Verdict => 0,
            Dtype::Integer
            | Dtype::Mark
            | Dtype::CtState
            | Dtype::CtDir
            | Dtype::CtStatus
            | Dtype::FibAddrType
            | Dtype::IfName => 1,
            _ => 2,
        }
    }

    /// Whether `in` on this type tests bits (`ct state new`) rather than equality.
    pub fn is_bitmask(self) -> bool {
        matches!(self, Dtype::CtState | Dtype::CtStatus)
    }

    /// The bytes of a JSON value of this type.
    pub fn encode(self, v: &Value) -> Result<Vec<u8>, String> {
        let bad = || format!("{v} is not a valid {} value", self.name());
        match self {
            Dtype::Ipv4Addr => {
                let ip: std::net::Ipv4Addr =
                    v.as_str().ok_or_else(bad)?.parse().map_err(|_| bad())?;
                Ok(ip.octets().to_vec())
            }
            Dtype::Ipv6Addr => {
                let ip: std::net::Ipv6Addr =
                    v.as_str().ok_or_else(bad)?.parse().map_err(|_| bad())?;
                Ok(ip.octets().to_vec())
            }
            Dtype::InetProto => {
                let n = match v.as_str() {
                    Some(name) => proto_number(name).ok_or_else(bad)?,
                    None => number(v).filter(|n| *n <= 255).ok_or_else(bad)?,
                };
                Ok(vec![n as u8])
            }
            Dtype::InetService => {
                let n = number(v).filter(|n| *n <= 65535).ok_or_else(bad)?;
                Ok((n as u16).to_be_bytes().to_vec())
            }
            Dtype::Integer | Dtype::Mark => {
                let n = number(v)
                    .filter(|n| *n <= u32::MAX as u64)
                    .ok_or_else(bad)?;
                Ok((n as u32).to_ne_bytes().to_vec())
            }
            Dtype::CtState | Dtype::CtStatus => {
                let names: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                let mut bits = 0u32;
                for name in names {
                    let name = name.as_str().ok_or_else(bad)?;
                    let table: &[(&str, u32)] = if self == Dtype::CtState {
                        CT_STATES
                    } else {
                        CT_STATUSES
                    };
                    bits |= table
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, b)| *b)
                        .ok_or_else(bad)?;
                }
                Ok(bits.to_ne_bytes().to_vec())
            }
            Dtype::CtDir => match v.as_str() {
                Some("original") => Ok(vec![0]),
                Some("reply") => Ok(vec![1]),
                _ => Err(bad()),
            },
            Dtype::FibAddrType => {
                let name = v.as_str().ok_or_else(bad)?;
                let n = FIB_ADDR_TYPES
                    .iter()
                    .position(|t| *t == name)
                    .ok_or_else(bad)?;
                Ok((n as u32).to_ne_bytes().to_vec())
            }
            Dtype::IfName => {
                let name = v.as_str().ok_or_else(bad)?;
                if name.len() >= 16 || name.contains('*') {
                    return Err(bad());
                }
                let mut out = name.as_bytes().to_vec();
                out.resize(16, 0);
                Ok(out)
            }
            Dtype::Verdict => Err(bad()),
        }
    }

    /// The JSON value of bytes of this type (for listings).
    pub fn decode(self, b: &[u8]) -> Value {
        let u32_ne = || {
            b.get(0..4)
                .map(|x| u32::from_ne_bytes(x.try_into().expect("4 bytes")))
        };
        match self {
            Dtype::Ipv4Addr if b.len() >= 4 => {
                Value::from(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
            }
            Dtype::Ipv6Addr if b.len() >= 16 => {
                let a: [u8; 16] = b[..16].try_into().expect("16 bytes");
                Value::from(std::net::Ipv6Addr::from(a).to_string())
            }
            Dtype::InetProto if !b.is_empty() => match proto_name(b[0]) {
                Some(name) => Value::from(name),
                None => Value::from(b[0]),
            },
            Dtype::InetService if b.len() >= 2 => Value::from(u16::from_be_bytes([b[0], b[1]])),
            Dtype::Integer
            | Dtype::Mark
            | Dtype::CtState
            | Dtype::CtStatus
            | Dtype::FibAddrType => u32_ne().map_or(Value::Null, Value::from),
            Dtype::IfName => Value::from(super::wire::string(b)),
            Dtype::CtDir if !b.is_empty() => {
                Value::from(if b[0] == 0 { "original" } else { "reply" })
            }
            _ => Value::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        }
    }
}

const CT_STATES: &[(&str, u32)] = &[
    ("invalid", 1),
    ("established", 2),
    ("related", 4),
    ("new", 8),
    ("untracked", 64),
];

const CT_STATUSES: &[(&str, u32)] = &[
    ("expected", 1),
    ("seen-reply", 2),
    ("assured", 4),
    ("confirmed", 8),
    ("snat", 16),
    ("dnat", 32),
    ("dying", 512),
];

/// `RTN_*` by number.
const FIB_ADDR_TYPES: &[&str] = &[
    "unspec",
    "unicast",
    "local",
    "broadcast",
    "anycast",
    "multicast",
    "blackhole",
    "unreachable",
    "prohibit",
];

const PROTOCOLS: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("tcp", 6),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("sctp", 132),
    ("udplite", 136),
];

pub fn proto_number(name: &str) -> Option<u64> {
    PROTOCOLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| u64::from(*p))
        .or_else(|| name.parse().ok())
}

fn proto_name(n: u8) -> Option<&'static str> {
    PROTOCOLS
        .iter()
        .find(|(_, p)| *p == n)
        .map(|(name, _)| *name)
}

/// A JSON number, or a string holding one.
pub fn number(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The concatenated key type number of `fields` (6 bits per field, first field highest).
pub fn concat_id(fields: &[Dtype]) -> u32 {
    fields.iter().fold(0, |acc, t| (acc << 6) | t.id())
}

/// The fields of a key type number.
pub fn split_concat_id(mut id: u32) -> Option<Vec<Dtype>> {
    let mut out = Vec::new();
    while id != 0 {
        out.push(Dtype::from_id(id & 0x3f)?);
        id >>= 6;
    }
    out.reverse();
    (!out.is_empty()).then_some(out)
}

/// Register bytes of one field (rounded up to 4).
pub fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// The key length of a (concatenated) key: single fields unpadded, concat fields padded.
pub fn key_len(fields: &[Dtype]) -> usize {
    match fields {
        [one] => one.len(),
        many => many.iter().map(|t| padded(t.len())).sum(),
    }
}

/// The bytes of a key of `fields` from its JSON value (`{"concat": [...]}` for several).
pub fn encode_key(fields: &[Dtype], v: &Value) -> Result<Vec<u8>, String> {
    if let [one] = fields {
        return one.encode(v);
    }
    let parts = v
        .get("concat")
        .and_then(Value::as_array)
        .filter(|p| p.len() == fields.len())
        .ok_or_else(|| format!("{v} is not a concatenation of {} values", fields.len()))?;
    let mut out = Vec::new();
    for (t, p) in fields.iter().zip(parts) {
        let mut b = t.encode(p)?;
        b.resize(padded(b.len()), 0);
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// The JSON value of a key of `fields`.
pub fn decode_key(fields: &[Dtype], b: &[u8]) -> Value {
    if let [one] = fields {
        return one.decode(b);
    }
    let mut parts = Vec::new();
    let mut off = 0;
    for t in fields {
        let end = (off + t.len()).min(b.len());
        parts.push(t.decode(&b[off.min(end)..end]));
        off += padded(t.len());
    }
    serde_json::json!({ "concat": parts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn concat_key_type_and_bytes_match_nft() {
        // nft --debug=mnl, "add map ip t m { type ipv4_addr . inet_proto . inet_service :
        // verdict; }": NFTA_SET_KEY_TYPE 0x0000730d, NFTA_SET_KEY_LEN 12; the element
        // 10.43.0.5 . tcp . 80 is 0a 2b 00 05 06 00 00 00 00 50 00 00.
        let fields = [Dtype::Ipv4Addr, Dtype::InetProto, Dtype::InetService];
        assert_eq!(concat_id(&fields), 0x730d);
        assert_eq!(key_len(&fields), 12);
        let key = encode_key(&fields, &json!({"concat": ["10.43.0.5", "tcp", 80]})).expect("key");
        assert_eq!(key, [0x0a, 0x2b, 0, 5, 6, 0, 0, 0, 0, 0x50, 0, 0]);
        assert_eq!(split_concat_id(0x730d), Some(fields.to_vec()));
        assert_eq!(
            decode_key(&fields, &key),
            json!({"concat": ["10.43.0.5", "tcp", 80]})
        );
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let e = Dtype::Ipv4Addr
            .encode(&json!("10.0.0"))
            .expect_err("bad ip");
        assert!(e.contains("ipv4_addr"), "{e}");
        assert!(Dtype::InetService.encode(&json!(70000)).is_err());
        assert_eq!(
            Dtype::CtState
                .encode(&json!(["new", "established"]))
                .expect("bits"),
            10u32.to_ne_bytes()
        );
    }
}
