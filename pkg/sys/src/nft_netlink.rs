//! nftables over netlink: `NftNetlink` implements the `Nft` trait by speaking nf_tables
//! (NETLINK_NETFILTER) to the kernel directly, so the node needs no `nft` program. `apply`
//! encodes the JSON document into one nfnetlink batch (`encode`), sends it in one `sendmsg`
//! and reads the kernel's answers; `list_table` dumps the table and prints it as
//! `nft -j list table` does (`decode`).

mod decode;
mod encode;
mod types;
mod wire;

use std::path::{Path, PathBuf};
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use serde_json::{json, Value};

use crate::nft::{Nft, NftError};
use encode::{Batch, Encoder, SetInfo};

/// The socket buffer `sendmsg` needs for a batch must hold it whole.
const DEFAULT_SOCKET_BUFFER: usize = 208 * 1024;
/// How long to wait for the kernel's answer before giving up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Batch sequence numbers start here, well apart from the requests made while encoding.
const BATCH_SEQ: u32 = 1 << 24;

/// The real nftables over netlink, in this process's network namespace or, with `in_netns`,
/// in a named one. Each call opens its own socket.
#[derive(Debug, Clone, Default)]
pub struct NftNetlink {
    netns: Option<PathBuf>,
}

impl NftNetlink {
    pub fn new() -> NftNetlink {
        NftNetlink::default()
    }

    /// Talks to the kernel of the named network namespace (`/var/run/netns/<name>`).
    pub fn in_netns(name: impl AsRef<str>) -> NftNetlink {
        NftNetlink {
            netns: Some(Path::new("/var/run/netns").join(name.as_ref())),
        }
    }

    fn connect(&self) -> Result<Conn, NftError> {
        let sock = match &self.netns {
            None => open_socket()?,
            Some(path) => {
                let path = path.clone();
                // setns changes the calling thread only: a short-lived thread enters the
                // namespace and opens the socket, which stays in that namespace.
                std::thread::spawn(move || {
                    let file = std::fs::File::open(&path)
                        .map_err(|e| failed(format!("open netns {}", path.display()), e))?;
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                        |e| {
                            failed(
                                format!("setns {}", path.display()),
                                std::io::Error::from_raw_os_error(e as i32),
                            )
                        },
                    )?;
                    open_socket()
                })
                .join()
                .map_err(|_| NftError::Failed {
                    action: "open netlink socket".into(),
                    message: "the namespace thread panicked".into(),
                })??
            }
        };
        Ok(Conn { sock, seq: 0 })
    }

    fn apply_blocking(&self, batch: &str) -> Result<(), NftError> {
        let mut conn = self.connect()?;
        let encoded = {
            let mut lookup = |family: u8, table: &str, set: &str| conn.get_set(family, table, set);
            Encoder::new(BATCH_SEQ, &mut lookup).document(batch)
        }
        .map_err(|message| NftError::Failed {
            action: "apply batch".into(),
            message,
        })?;
        conn.send_batch(&encoded)
    }

    fn list_blocking(&self, family: &str, table: &str) -> Result<Option<String>, NftError> {
        let fam = encode::family_number(family).ok_or_else(|| NftError::Failed {
            action: format!("list table {family} {table}"),
            message: format!("unknown family \"{family}\""),
        })?;
        let mut conn = self.connect()?;
        // A listing is several dumps: retry until no change happened in between.
        for _ in 0..5 {
            let before = conn.genid()?;
            let listing = conn.listing(fam, table)?;
            if conn.genid()? == before {
                return Ok(listing.map(|v| v.to_string()));
            }
        }
        Err(NftError::Failed {
            action: format!("list table {family} {table}"),
            message: "the ruleset kept changing while it was listed; try again".into(),
        })
    }
}

fn failed(action: impl Into<String>, e: std::io::Error) -> NftError {
    NftError::Failed {
        action: action.into(),
        message: e.to_string(),
    }
}

fn open_socket() -> Result<Socket, NftError> {
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| failed("open netlink socket", e))?;
    sock.bind_auto()
        .map_err(|e| failed("bind netlink socket", e))?;
    // Error answers without the request copied back, with the kernel's message if any.
    let _ = sock.set_cap_ack(true);
    let _ = sock.set_ext_ack(true);
    nix::sys::socket::setsockopt(
        &sock,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as i64, 0),
    )
    .map_err(|e| {
        failed(
            "set netlink receive timeout",
            std::io::Error::from_raw_os_error(e as i32),
        )
    })?;
    Ok(sock)
}

/// What a request got back: the data messages' payloads, or the kernel's errno.
type Answer = Result<Vec<Vec<u8>>, (i32, Option<String>)>;

/// One open nf_tables socket.
struct Conn {
    sock: Socket,
    seq: u32,
}

impl Conn {
    fn send(&self, what: &str, bytes: &[u8]) -> Result<(), NftError> {
        if bytes.len() + 1024 > DEFAULT_SOCKET_BUFFER {
            nix::sys::socket::setsockopt(
                &self.sock,
                nix::sys::socket::sockopt::SndBufForce,
                &(bytes.len() + 4096),
            )
            .map_err(|e| {
                failed(
                    format!("{what}: grow the netlink send buffer"),
                    std::io::Error::from_raw_os_error(e as i32),
                )
            })?;
        }
        let sent = self.sock.send(bytes, 0).map_err(|e| failed(what, e))?;
        if sent != bytes.len() {
            return Err(NftError::Failed {
                action: what.into(),
                message: format!("the kernel took {sent} of {} bytes", bytes.len()),
            });
        }
        Ok(())
    }

    /// Reads messages and hands each to `each` until it says the conversation is over.
    fn read(
        &self,
        what: &str,
        mut each: impl FnMut(&wire::Message<'_>) -> bool,
    ) -> Result<(), NftError> {
        loop {
            let (buf, _) = self.sock.recv_from_full().map_err(|e| {
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    failed(
                        what,
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no answer from the kernel",
                        ),
                    )
                } else {
                    failed(what, e)
                }
            })?;
            let messages = wire::messages(&buf).map_err(|message| NftError::Failed {
                action: what.into(),
                message,
            })?;
            for m in &messages {
                if !each(m) {
                    return Ok(());
                }
            }
        }
    }

    /// One request: a get (answered by data and an ACK) or a dump (answered by data and DONE).
    fn request(
        &mut self,
        what: &str,
        msg: u16,
        dump: bool,
        family: u8,
        attrs: &[(u16, &str)],
    ) -> Result<Answer, NftError> {
        self.seq += 1;
        let seq = self.seq;
        let mut b = wire::Builder::new();
        let flags = wire::NLM_F_REQUEST
            | if dump {
                wire::NLM_F_DUMP
            } else {
                wire::NLM_F_ACK
            };
        b.begin_nft(msg, flags, seq, family);
        for (attr, value) in attrs {
            b.put_str(*attr, value);
        }
        b.end();
        self.send(what, &b.buf)?;
        let mut data = Vec::new();
        let mut error = None;
        self.read(what, |m| {
            if m.seq != seq {
                return true;
            }
            if let Some((errno, _, text)) = wire::error_of(m) {
                if errno != 0 {
                    error = Some((errno, text));
                }
                return false;
            }
            if m.msg_type == wire::NLMSG_DONE {
                return false;
            }
            data.push(m.payload.to_vec());
            // A get without NLM_F_MULTI still ends with its ACK; a dump ends with DONE.
            true
        })?;
        Ok(match error {
            Some(e) => Err(e),
            None => Ok(data),
        })
    }

    fn genid(&mut self) -> Result<u32, NftError> {
        let answer = self.request("get ruleset generation", wire::GETGEN, false, 0, &[])?;
        answer
            .ok()
            .and_then(|msgs| {
                let p = msgs.first()?;
                wire::be32(wire::find(&wire::attrs(p.get(4..)?), wire::gen::ID)?)
            })
            .ok_or_else(|| NftError::Failed {
                action: "get ruleset generation".into(),
                message: "the kernel answered without one".into(),
            })
    }

    fn get_set(&mut self, family: u8, table: &str, set: &str) -> Result<Option<SetInfo>, String> {
        let what = format!("get set {table} {set}");
        let answer = self
            .request(
                &what,
                wire::GETSET,
                false,
                family,
                &[(wire::set::TABLE, table), (wire::set::NAME, set)],
            )
            .map_err(|e| e.to_string())?;
        match answer {
            Ok(msgs) => match msgs.first() {
                Some(p) => decode::set(family, p).map(|s| Some(s.info)),
                None => Ok(None),
            },
            Err((libc_enoent, _)) if libc_enoent == nix::errno::Errno::ENOENT as i32 => Ok(None),
            Err((errno, _)) => Err(format!(
                "{what}: {}",
                std::io::Error::from_raw_os_error(errno)
            )),
        }
    }

    /// Sends the batch and a request after it, then reads every answer up to that request's:
    /// the kernel answers batch messages only when they fail (nft does not ask for ACKs
    /// either), so everything failed has been said by then.
    fn send_batch(&mut self, batch: &Batch) -> Result<(), NftError> {
        let rcvbuf = (batch.messages() as usize * 512).clamp(DEFAULT_SOCKET_BUFFER, 32 << 20);
        let _ = nix::sys::socket::setsockopt(
            &self.sock,
            nix::sys::socket::sockopt::RcvBufForce,
            &rcvbuf,
        );
        self.send("apply batch", &batch.bytes)?;
        self.seq += 1;
        let fence = self.seq;
        let mut b = wire::Builder::new();
        b.begin_nft(
            wire::GETGEN,
            wire::NLM_F_REQUEST | wire::NLM_F_ACK,
            fence,
            0,
        );
        b.end();
        self.send("apply batch", &b.buf)?;
        let mut errors: Vec<(u32, i32, Option<String>)> = Vec::new();
        self.read("apply batch", |m| {
            if let Some((errno, seq, text)) = wire::error_of(m) {
                if seq == fence {
                    return false;
                }
                if errno != 0 && (batch.first_seq..=batch.last_seq).contains(&seq) {
                    errors.push((seq, errno, text));
                }
            }
            true
        })?;
        errors.sort_by_key(|(seq, _, _)| *seq);
        let Some((seq, errno, text)) = errors.first() else {
            return Ok(());
        };
        let mut message = std::io::Error::from_raw_os_error(*errno).to_string();
        if let Some(t) = text {
            message.push_str(&format!(" ({t})"));
        }
        if errors.len() > 1 {
            message.push_str(&format!(
                "; {} more commands of the batch failed after it",
                errors.len() - 1
            ));
        }
        Err(NftError::Failed {
            action: batch.command_of(*seq).to_string(),
            message,
        })
    }

    /// The `nft -j list table` document of one table; `None` when it does not exist.
    fn listing(&mut self, family: u8, table: &str) -> Result<Option<Value>, NftError> {
        let what = format!("list table {} {table}", decode::family_name(family));
        let kernel =
            |e: (i32, Option<String>)| failed(what.clone(), std::io::Error::from_raw_os_error(e.0));
        let enoent = nix::errno::Errno::ENOENT as i32;
        let table_msgs = match self.request(
            &what,
            wire::GETTABLE,
            false,
            family,
            &[(wire::table::NAME, table)],
        )? {
            Ok(m) => m,
            Err((e, _)) if e == enoent => return Ok(None),
            Err(e) => return Err(kernel(e)),
        };
        let mut out = vec![json!({"metainfo": {"json_schema_version": 1}})];
        if let Some(t) = table_msgs.first() {
            out.push(decode::table(family, t));
        }
        let ours = |p: &Vec<u8>| decode::table_of(p).as_deref() == Some(table);
        let dump =
            |conn: &mut Conn, msg: u16, attrs: &[(u16, &str)]| -> Result<Vec<Vec<u8>>, NftError> {
                match conn.request(&what, msg, true, family, attrs)? {
                    Ok(m) => Ok(m.into_iter().filter(|p| ours(p)).collect()),
                    Err((e, _)) if e == enoent => Ok(Vec::new()),
                    Err(e) => Err(kernel(e)),
                }
            };
        let sets = dump(self, wire::GETSET, &[(wire::set::TABLE, table)])?;
        for p in &sets {
            let set = match decode::set(family, p) {
                Ok(set) => set,
                Err(_) => {
                    out.push(decode::unknown_set(family, p));
                    continue;
                }
            };
            if set.anonymous {
                continue;
            }
            let mut elems = Vec::new();
            for e in dump(
                self,
                wire::GETSETELEM,
                &[
                    (wire::elem::LIST_TABLE, table),
                    (wire::elem::LIST_SET, &set.name),
                ],
            )? {
                decode::elements(&set.info, &e, &mut elems);
            }
            let mut j = set.json;
            if !elems.is_empty() {
                j.insert("elem".into(), elems.into());
            }
            let kind = if set.is_map { "map" } else { "set" };
            let mut object = serde_json::Map::new();
            object.insert(kind.to_string(), Value::Object(j));
            out.push(Value::Object(object));
        }
        for p in dump(self, wire::GETCHAIN, &[])? {
            out.push(decode::chain(family, &p));
        }
        for p in dump(self, wire::GETRULE, &[(wire::rule::TABLE, table)])? {
            out.push(decode::rule(family, &p));
        }
        Ok(Some(json!({ "nftables": out })))
    }
}

#[async_trait::async_trait]
impl Nft for NftNetlink {
    async fn apply(&self, batch: &str) -> Result<(), NftError> {
        let this = self.clone();
        let batch = batch.to_string();
        tokio::task::spawn_blocking(move || this.apply_blocking(&batch))
            .await
            .map_err(|e| NftError::Task {
                action: "apply batch".into(),
                message: e.to_string(),
            })?
    }

    async fn list_table(&self, family: &str, table: &str) -> Result<Option<String>, NftError> {
        let this = self.clone();
        let action = format!("list table {family} {table}");
        let (family, table) = (family.to_string(), table.to_string());
        tokio::task::spawn_blocking(move || this.list_blocking(&family, &table))
            .await
            .map_err(|e| NftError::Task {
                action,
                message: e.to_string(),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sh(args: &[&str]) -> Result<String, String> {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .map_err(|e| format!("{args:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Network namespaces deleted on drop.
    struct Namespaces(Vec<String>);

    impl Drop for Namespaces {
        fn drop(&mut self) {
            for ns in &self.0 {
                let _ = sh(&["ip", "netns", "del", ns]);
            }
        }
    }

    fn normalise(v: &mut Value) {
        match v {
            Value::Object(o) => {
                o.remove("handle");
                o.remove("expires");
                o.values_mut().for_each(normalise);
                if let Some(Value::Array(elems)) = o.get_mut("elem") {
                    elems.sort_by_key(|e| e.to_string());
                }
            }
            Value::Array(a) => {
                a.retain(|x| x.get("metainfo").is_none());
                a.iter_mut().for_each(normalise);
            }
            _ => {}
        }
    }

    fn ruleset(ns: &str) -> Value {
        let out =
            sh(&["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"]).expect("list ruleset");
        let mut v: Value = serde_json::from_str(&out).expect("json");
        normalise(&mut v);
        v
    }

    /// Root-only: the test batches (every construct the encoder knows, plus an interval set and
    /// the network policy constructs: ct direction, port ranges, tcp reset)
    /// applied through `NftNetlink` in one namespace and through `nft -j -f` in another give
    /// the same `nft -j list ruleset`. Skips without root or the nft program.
    #[tokio::test]
    async fn netlink_and_nft_give_the_same_ruleset_for_the_test_batches() {
        if sh(&["id", "-u"]).map(|u| u.trim() != "0").unwrap_or(true)
            || sh(&["nft", "--version"]).is_err()
        {
            eprintln!("skipped: needs root and the nft program");
            return;
        }
        let ours = format!("mininl{}a", std::process::id());
        let theirs = format!("mininl{}b", std::process::id());
        let _guard = Namespaces(vec![ours.clone(), theirs.clone()]);
        sh(&["ip", "netns", "add", &ours]).expect("netns");
        sh(&["ip", "netns", "add", &theirs]).expect("netns");
        let interval = r#"{"nftables":[
            {"add":{"table":{"family":"ip","name":"v"}}},
            {"add":{"set":{"family":"ip","table":"v","name":"nets","type":"ipv4_addr","flags":["interval"]}}},
            {"add":{"element":{"family":"ip","table":"v","name":"nets","elem":[{"prefix":{"addr":"10.0.0.0","len":8}},"192.168.1.1",{"range":["172.16.0.1","172.16.0.9"]}]}}},
            {"add":{"chain":{"family":"ip","table":"v","name":"in","type":"filter","hook":"input","prio":0,"policy":"accept"}}},
            {"add":{"rule":{"family":"ip","table":"v","chain":"in","expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"@nets"}},{"counter":null},{"drop":null}]}}},
            {"add":{"rule":{"family":"ip","table":"v","chain":"in","expr":[{"match":{"op":"==","left":{"ct":{"key":"direction"}},"right":"reply"}},{"accept":null}]}}},
            {"add":{"rule":{"family":"ip","table":"v","chain":"in","expr":[{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"tcp"}},{"match":{"op":">=","left":{"payload":{"protocol":"th","field":"dport"}},"right":80}},{"match":{"op":"<=","left":{"payload":{"protocol":"th","field":"dport"}},"right":90}},{"accept":null}]}}},
            {"add":{"rule":{"family":"ip","table":"v","chain":"in","expr":[{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":"established"}},{"reject":{"type":"tcp reset"}}]}}}
        ]}"#;
        let nl = NftNetlink::in_netns(&ours);
        let dir = std::env::temp_dir().join(format!("mininl{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for (name, doc) in [
            ("batch", include_str!("nft_netlink/testdata/batch.json")),
            ("batch2", include_str!("nft_netlink/testdata/batch2.json")),
            ("interval", interval),
        ] {
            nl.apply(doc)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let file = dir.join(format!("{name}.json"));
            std::fs::write(&file, doc).expect("write");
            sh(&[
                "ip",
                "netns",
                "exec",
                &theirs,
                "nft",
                "-j",
                "-f",
                file.to_str().expect("path"),
            ])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(ruleset(&ours), ruleset(&theirs), "{name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(nl.list_table("ip", "nope").await.expect("list"), None);
    }
}
