//! Compact label sets for the series table: one allocation per series (length-prefixed names and
//! values in name order), read in place and unpacked into a map only where a caller needs one.

use std::collections::BTreeMap;

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Packed(Box<[u8]>);

impl Packed {
    pub(crate) fn pack(labels: &BTreeMap<String, String>) -> Packed {
        let mut out = Vec::with_capacity(labels.iter().map(|(k, v)| k.len() + v.len() + 8).sum());
        for (k, v) in labels {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        Packed(out.into_boxed_slice())
    }

    /// Name/value pairs in name order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let k = take(&mut rest)?;
            let v = take(&mut rest)?;
            Some((k, v))
        })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    pub(crate) fn unpack(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Same label set as `labels`, without allocating.
    pub(crate) fn eq_map(&self, labels: &BTreeMap<String, String>) -> bool {
        let mut mine = self.iter();
        for (k, v) in labels {
            match mine.next() {
                Some((mk, mv)) if mk == k && mv == v => {}
                _ => return false,
            }
        }
        mine.next().is_none()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.len() + 16
    }
}

fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    if rest.len() < 4 {
        return None;
    }
    let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let s = rest.get(4..4 + n)?;
    *rest = &rest[4 + n..];
    // Built from `String`s, so always valid UTF-8.
    std::str::from_utf8(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_labels_round_trip_and_compare() {
        let l: BTreeMap<String, String> = [("__name__", "up"), ("pod", "a\0b"), ("x", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let p = Packed::pack(&l);
        assert_eq!(p.unpack(), l);
        assert_eq!(p.get("pod"), Some("a\0b"));
        assert_eq!(p.get("x"), Some(""));
        assert_eq!(p.get("y"), None);
        assert!(p.eq_map(&l));
        let mut other = l.clone();
        other.insert("z".into(), "1".into());
        assert!(!p.eq_map(&other));
    }
}
