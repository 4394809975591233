//! The nfnetlink wire format for nf_tables: message and attribute numbers from
//! `linux/netfilter/nf_tables.h` / `nfnetlink.h`, a builder for messages with (nested)
//! attributes and a reader for the kernel's answers.

/// `NFNL_SUBSYS_NFTABLES`.
pub const SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN` / `END` (`NLMSG_MIN_TYPE` and the next one).
pub const MSG_BATCH_BEGIN: u16 = 0x10;
pub const MSG_BATCH_END: u16 = 0x11;

/// `NFT_MSG_*`.
pub const NEWTABLE: u16 = 0;
pub const GETTABLE: u16 = 1;
pub const DELTABLE: u16 = 2;
pub const NEWCHAIN: u16 = 3;
pub const GETCHAIN: u16 = 4;
pub const DELCHAIN: u16 = 5;
pub const NEWRULE: u16 = 6;
pub const GETRULE: u16 = 7;
pub const DELRULE: u16 = 8;
pub const NEWSET: u16 = 9;
pub const GETSET: u16 = 10;
pub const DELSET: u16 = 11;
pub const NEWSETELEM: u16 = 12;
pub const GETSETELEM: u16 = 13;
pub const DELSETELEM: u16 = 14;
pub const GETGEN: u16 = 16;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
/// In an error message: extended-ack attributes follow (`NLM_F_ACK_TLVS`).
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// In an error message: the request was not copied back (`NLM_F_CAPPED`).
pub const NLM_F_CAPPED: u16 = 0x100;
/// `NLMSGERR_ATTR_MSG`.
pub const NLMSGERR_ATTR_MSG: u16 = 1;

pub const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// `NFTA_LIST_ELEM`.
pub const LIST_ELEM: u16 = 1;

pub mod table {
    pub const NAME: u16 = 1;
    pub const FLAGS: u16 = 2;
    pub const HANDLE: u16 = 4;
}

pub mod chain {
    pub const TABLE: u16 = 1;
    pub const HANDLE: u16 = 2;
    pub const NAME: u16 = 3;
    pub const HOOK: u16 = 4;
    pub const POLICY: u16 = 5;
    pub const TYPE: u16 = 7;
    pub const HOOK_NUM: u16 = 1;
    pub const HOOK_PRIORITY: u16 = 2;
}

pub mod rule {
    pub const TABLE: u16 = 1;
    pub const CHAIN: u16 = 2;
    pub const HANDLE: u16 = 3;
    pub const EXPRESSIONS: u16 = 4;
    pub const POSITION: u16 = 6;
}

pub mod expr {
    pub const NAME: u16 = 1;
    pub const DATA: u16 = 2;
}

pub mod set {
    pub const TABLE: u16 = 1;
    pub const NAME: u16 = 2;
    pub const FLAGS: u16 = 3;
    pub const KEY_TYPE: u16 = 4;
    pub const KEY_LEN: u16 = 5;
    pub const DATA_TYPE: u16 = 6;
    pub const DATA_LEN: u16 = 7;
    pub const DESC: u16 = 9;
    pub const ID: u16 = 10;
    pub const TIMEOUT: u16 = 11;
    pub const USERDATA: u16 = 13;
    pub const HANDLE: u16 = 16;
    pub const DESC_SIZE: u16 = 1;

    pub const F_ANONYMOUS: u32 = 0x1;
    pub const F_CONSTANT: u32 = 0x2;
    pub const F_INTERVAL: u32 = 0x4;
    pub const F_MAP: u32 = 0x8;
    pub const F_TIMEOUT: u32 = 0x10;
    pub const F_EVAL: u32 = 0x20;
}

pub mod elem {
    pub const LIST_TABLE: u16 = 1;
    pub const LIST_SET: u16 = 2;
    pub const LIST_ELEMENTS: u16 = 3;
    pub const LIST_SET_ID: u16 = 4;
    pub const KEY: u16 = 1;
    pub const DATA: u16 = 2;
    pub const FLAGS: u16 = 3;
    pub const TIMEOUT: u16 = 4;
    pub const EXPIRATION: u16 = 5;
    pub const F_INTERVAL_END: u32 = 0x1;
}

/// `NFTA_DATA_*` and `NFTA_VERDICT_*`.
pub mod data {
    pub const VALUE: u16 = 1;
    pub const VERDICT: u16 = 2;
    pub const VERDICT_CODE: u16 = 1;
    pub const VERDICT_CHAIN: u16 = 2;
    /// `NFT_DATA_VERDICT`: the data type of verdict maps.
    pub const TYPE_VERDICT: u32 = 0xffff_ff00;
}

/// Verdict codes (`NF_DROP`, `NF_ACCEPT`, `NFT_*`).
pub mod verdict {
    pub const DROP: i32 = 0;
    pub const ACCEPT: i32 = 1;
    pub const CONTINUE: i32 = -1;
    pub const JUMP: i32 = -3;
    pub const GOTO: i32 = -4;
    pub const RETURN: i32 = -5;
}

pub mod gen {
    pub const ID: u16 = 1;
}

/// `NFT_REG_VERDICT` / `NFT_REG_1`.
pub const REG_VERDICT: u32 = 0;

/// The kernel register number of 32-bit register slot `slot` (0-based, as nft allocates
/// them): slots on a 16-byte boundary are named by the legacy `NFT_REG_1..4`, the others by
/// `NFT_REG32_00 + slot` -- nft's own `netlink_put_register` does the same.
pub fn register(slot: u32) -> u32 {
    if slot.is_multiple_of(4) {
        1 + slot / 4
    } else {
        8 + slot
    }
}

/// Builds a buffer of netlink messages with attributes.
#[derive(Debug, Default)]
pub struct Builder {
    pub buf: Vec<u8>,
    msg_start: usize,
    nests: Vec<usize>,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Starts a message: `nlmsghdr` then `nfgenmsg` (family, version 0, `res_id`).
    pub fn begin(&mut self, msg_type: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        self.msg_start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&msg_type.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    /// An nf_tables message (`(NFNL_SUBSYS_NFTABLES << 8) | msg`).
    pub fn begin_nft(&mut self, msg: u16, flags: u16, seq: u32, family: u8) {
        self.begin((SUBSYS_NFTABLES << 8) | msg, flags, seq, family, 0);
    }

    /// Ends the current message, writing its length.
    pub fn end(&mut self) {
        let len = (self.buf.len() - self.msg_start) as u32;
        self.buf[self.msg_start..self.msg_start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn put(&mut self, attr: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&attr.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// A NUL-terminated string.
    pub fn put_str(&mut self, attr: u16, s: &str) {
        let mut bytes = Vec::with_capacity(s.len() + 1);
        bytes.extend_from_slice(s.as_bytes());
        bytes.push(0);
        self.put(attr, &bytes);
    }

    /// A big-endian u32 (nf_tables attributes are in network order).
    pub fn put_u32(&mut self, attr: u16, v: u32) {
        self.put(attr, &v.to_be_bytes());
    }

    pub fn put_u64(&mut self, attr: u16, v: u64) {
        self.put(attr, &v.to_be_bytes());
    }

    pub fn nest(&mut self, attr: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(attr | NLA_F_NESTED).to_ne_bytes());
    }

    pub fn end_nest(&mut self) {
        let start = self.nests.pop().expect("end_nest without nest");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

/// One message read from the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub msg_type: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after `nlmsghdr`.
    pub payload: &'a [u8],
}

/// Splits a receive buffer into messages.
pub fn messages(mut buf: &[u8]) -> Result<Vec<Message<'_>>, String> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        if len < 16 || len > buf.len() {
            return Err(format!(
                "a netlink message of length {len} in {} bytes",
                buf.len()
            ));
        }
        out.push(Message {
            msg_type: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes")),
            payload: &buf[16..len],
        });
        let aligned = (len + 3) & !3;
        buf = &buf[aligned.min(buf.len())..];
    }
    Ok(out)
}

/// An `NLMSG_ERROR` message: the errno (0 for an ACK), the sequence number of the request it
/// answers and the extended-ack text, if any.
pub fn error_of(m: &Message<'_>) -> Option<(i32, u32, Option<String>)> {
    if m.msg_type != NLMSG_ERROR || m.payload.len() < 20 {
        return None;
    }
    let code = i32::from_ne_bytes(m.payload[0..4].try_into().ok()?);
    let inner_len = u32::from_ne_bytes(m.payload[4..8].try_into().ok()?) as usize;
    let seq = u32::from_ne_bytes(m.payload[12..16].try_into().ok()?);
    let mut text = None;
    if m.flags & NLM_F_ACK_TLVS != 0 {
        let skip = if m.flags & NLM_F_CAPPED != 0 {
            20
        } else {
            4 + ((inner_len + 3) & !3)
        };
        if let Some(tlvs) = m.payload.get(skip..) {
            for (attr, value) in attrs(tlvs) {
                if attr == NLMSGERR_ATTR_MSG {
                    text = Some(string(value));
                }
            }
        }
    }
    Some((-code, seq, text))
}

/// The attributes of a buffer, as (type without flags, payload) pairs.
pub fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let attr = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((attr, &buf[4..len]));
        let aligned = (len + 3) & !3;
        buf = &buf[aligned.min(buf.len())..];
    }
    out
}

/// The payload of the first attribute `attr`.
pub fn find<'a>(list: &[(u16, &'a [u8])], attr: u16) -> Option<&'a [u8]> {
    list.iter().find(|(a, _)| *a == attr).map(|(_, v)| *v)
}

pub fn string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

pub fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(0..4)?.try_into().ok()?))
}

pub fn be64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(0..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_slots_map_to_legacy_and_32bit_numbers_like_nft() {
        // nft --debug=netlink: "ip daddr . meta l4proto . th dport" loads into reg 1, 9, 10;
        // the second 16-byte register of dnat's port is reg 2.
        assert_eq!(register(0), 1);
        assert_eq!(register(1), 9);
        assert_eq!(register(2), 10);
        assert_eq!(register(4), 2);
    }

    #[test]
    fn builder_nested_attributes_are_padded_and_flagged() {
        let mut b = Builder::new();
        b.begin_nft(NEWTABLE, NLM_F_REQUEST, 7, 2);
        b.nest(4);
        b.put_str(1, "t");
        b.end_nest();
        b.end();
        let mut expected = vec![];
        expected.extend_from_slice(&32u32.to_ne_bytes());
        expected.extend_from_slice(&0x0a00u16.to_ne_bytes());
        expected.extend_from_slice(&1u16.to_ne_bytes());
        expected.extend_from_slice(&7u32.to_ne_bytes());
        expected.extend_from_slice(&0u32.to_ne_bytes());
        expected.extend_from_slice(&[2, 0, 0, 0]);
        expected.extend_from_slice(&12u16.to_ne_bytes());
        expected.extend_from_slice(&(4u16 | NLA_F_NESTED).to_ne_bytes());
        expected.extend_from_slice(&6u16.to_ne_bytes());
        expected.extend_from_slice(&1u16.to_ne_bytes());
        expected.extend_from_slice(&[b't', 0, 0, 0]);
        assert_eq!(b.buf, expected);
        let parsed = messages(&b.buf).expect("parse");
        assert_eq!(parsed.len(), 1);
        let outer = attrs(parsed[0].payload.get(4..).expect("nfgenmsg"));
        assert_eq!(outer[0].0, 4);
        assert_eq!(string(find(&attrs(outer[0].1), 1).expect("name")), "t");
    }
}
