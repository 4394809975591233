//! Request parameters of mini's log search: times as RFC 3339, Unix seconds or Unix
//! nanoseconds, and durations like `1h30m`.

use std::time::Duration;

use chrono::DateTime;

/// The first value of `name`.
pub(crate) fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// A duration such as `90s`, `15m`, `1h30m`, `7d` or `2w` (Prometheus' units, ms to y).
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (use e.g. 30s, 15m, 1h30m, 7d)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(bad()),
        };
        total += Duration::from_millis(number.checked_mul(unit_ms).ok_or_else(bad)?);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A point in time in Unix nanoseconds from RFC 3339, Unix seconds (with a fraction) or Unix
/// nanoseconds (an integer of more than 13 digits, as Loki takes them).
pub(crate) fn time_ns(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return t
            .timestamp_nanos_opt()
            .ok_or_else(|| format!("{text:?} is out of range"));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && text.len() > 13 {
        return text
            .parse::<i64>()
            .map_err(|_| format!("{text:?} is out of range"));
    }
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds.abs() < 9.2e9 => {
            Ok((seconds * 1e9).round() as i64)
        }
        _ => Err(format!(
            "{text:?} is not a time (use RFC 3339, Unix seconds or Unix nanoseconds)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_compound_units_add_up() {
        assert_eq!(duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn duration_without_unit_is_refused() {
        assert!(duration("15").is_err());
        assert!(duration("m").is_err());
        assert!(duration("1x").is_err());
        assert!(duration("").is_err());
    }

    #[test]
    fn time_ns_accepts_rfc3339_seconds_and_nanoseconds() {
        let ns = 1_700_000_000_000_000_000_i64;
        assert_eq!(time_ns("2023-11-14T22:13:20Z").unwrap(), ns);
        assert_eq!(time_ns("1700000000").unwrap(), ns);
        assert_eq!(time_ns("1700000000.5").unwrap(), ns + 500_000_000);
        assert_eq!(time_ns("1700000000000000000").unwrap(), ns);
    }

    #[test]
    fn time_ns_garbage_is_refused() {
        assert!(time_ns("yesterday").is_err());
        assert!(time_ns("").is_err());
    }
}
