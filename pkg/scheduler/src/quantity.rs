//! Parsing resource quantities (`100m`, `1.5`, `128Mi`, `1e3`) into the integer units the
//! scheduler adds up: millicores for cpu, plain units (bytes, counts) for everything else.

/// The value of `s` in thousandths (`"100m"` → 100, `"2"` → 2000), rounded up like upstream's
/// `MilliValue`. Unparseable quantities count as zero (the API server validates them).
pub fn milli_value(s: &str) -> i64 {
    parse(s).map(|v| ceil_i64(v * 1000.0)).unwrap_or(0)
}

/// The value of `s` in whole units, rounded up like upstream's `Value`.
pub fn value(s: &str) -> i64 {
    parse(s).map(ceil_i64).unwrap_or(0)
}

fn ceil_i64(v: f64) -> i64 {
    // Absorb binary floating point noise (0.1 * 1000 = 100.00000000000001).
    let r = v.round();
    if (v - r).abs() < 1e-6 {
        r as i64
    } else {
        v.ceil() as i64
    }
}

fn parse(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let split = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || ((*c == '+' || *c == '-') && *i == 0)))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let base: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        exp if exp.starts_with('e') || exp.starts_with('E') => {
            let e: i32 = exp[1..].parse().ok()?;
            10f64.powi(e)
        }
        _ => return None,
    };
    Some(base * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_value_cpu_forms_convert_to_millicores() {
        assert_eq!(milli_value("100m"), 100);
        assert_eq!(milli_value("1"), 1000);
        assert_eq!(milli_value("0.5"), 500);
        assert_eq!(milli_value("1.1"), 1100);
        assert_eq!(milli_value("250u"), 1);
        assert_eq!(milli_value("bogus"), 0);
    }

    #[test]
    fn value_memory_forms_convert_to_bytes() {
        assert_eq!(value("128Mi"), 128 * 1024 * 1024);
        assert_eq!(value("1Gi"), 1 << 30);
        assert_eq!(value("1G"), 1_000_000_000);
        assert_eq!(value("1e3"), 1000);
        assert_eq!(value("110"), 110);
        assert_eq!(value("1.5k"), 1500);
    }
}
