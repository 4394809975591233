//! Kubernetes resource quantities (`500m`, `1.5`, `128Mi`, `2G`, `1e3`) as exact milli-units.

use std::fmt;

/// A quantity in thousandths of the base unit (cores, bytes, objects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity(pub i128);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
pub struct QuantityError(pub String);

const BINARY: &[(&str, u32)] = &[
    ("Ki", 1),
    ("Mi", 2),
    ("Gi", 3),
    ("Ti", 4),
    ("Pi", 5),
    ("Ei", 6),
];
const DECIMAL: &[(&str, i32)] = &[
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

impl Quantity {
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let err = || QuantityError(s.to_string());
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        if number.is_empty() {
            return Err(err());
        }
        let negative = number.starts_with('-');
        let digits = number.trim_start_matches(['+', '-']);
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        let mantissa: i128 = format!("{int_part}{frac_part}")
            .parse()
            .map_err(|_| err())?;
        // value = mantissa × 10^(-frac_len) × multiplier; kept in milli-units
        let mut exp10: i32 = 3 - frac_part.len() as i32;
        let mut factor: i128 = 1;
        if let Some(&(_, p)) = BINARY.iter().find(|(sfx, _)| *sfx == suffix) {
            factor = 1024i128.pow(p);
        } else if let Some(&(_, e)) = DECIMAL.iter().find(|(sfx, _)| *sfx == suffix) {
            exp10 += e;
        } else if let Some(e) = suffix.strip_prefix(['e', 'E']) {
            exp10 += e.parse::<i32>().map_err(|_| err())?;
        } else {
            return Err(err());
        }
        let mut value = mantissa * factor;
        if exp10 >= 0 {
            value = value
                .checked_mul(10i128.checked_pow(exp10 as u32).ok_or_else(err)?)
                .ok_or_else(err)?;
        } else {
            let div = 10i128.checked_pow((-exp10) as u32).ok_or_else(err)?;
            // round up like upstream's ScaledValue for sub-milli precision
            value = (value + div - 1) / div;
        }
        Ok(Quantity(if negative { -value } else { value }))
    }

    /// Parses a JSON quantity (string or number); absent or invalid is zero.
    pub fn from_json(v: &serde_json::Value) -> Quantity {
        match v {
            serde_json::Value::String(s) => Quantity::parse(s).unwrap_or_default(),
            serde_json::Value::Number(n) => Quantity::parse(&n.to_string()).unwrap_or_default(),
            _ => Quantity::default(),
        }
    }

    pub fn milli(&self) -> i128 {
        self.0
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;
    fn add(self, o: Quantity) -> Quantity {
        Quantity(self.0 + o.0)
    }
}

impl std::ops::AddAssign for Quantity {
    fn add_assign(&mut self, o: Quantity) {
        self.0 += o.0;
    }
}

impl fmt::Display for Quantity {
    /// Canonical-ish form: `500m`, `2`, `128Mi`, `1Gi`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1000 != 0 {
            return write!(f, "{}m", self.0);
        }
        let whole = self.0 / 1000;
        if whole != 0 {
            for (sfx, p) in BINARY.iter().rev() {
                let unit = 1024i128.pow(*p);
                if whole % unit == 0 {
                    return write!(f, "{}{sfx}", whole / unit);
                }
            }
        }
        write!(f, "{whole}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_parse_suffixes_to_milli_units() {
        let cases = [
            ("500m", 500),
            ("1", 1000),
            ("0.5", 500),
            ("1.5", 1500),
            ("1Ki", 1_024_000),
            ("2k", 2_000_000),
            ("1e3", 1_000_000),
            ("128Mi", 128 * 1024 * 1024 * 1000),
        ];
        for (s, want) in cases {
            assert_eq!(Quantity::parse(s).unwrap().milli(), want, "{s}");
        }
        assert!(Quantity::parse("abc").is_err());
        assert!(Quantity::parse("1Xi").is_err());
    }

    #[test]
    fn quantity_display_round_trips_common_forms() {
        for s in ["500m", "2", "128Mi", "1Gi", "1536Mi"] {
            assert_eq!(Quantity::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            (Quantity::parse("100m").unwrap() + Quantity::parse("0.5").unwrap()).to_string(),
            "600m"
        );
        assert_eq!(
            (Quantity::parse("1Gi").unwrap() + Quantity::parse("512Mi").unwrap()).to_string(),
            "1536Mi"
        );
    }
}
