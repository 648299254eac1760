//! Kubernetes resource quantities (`500m`, `1Gi`, `1e3`): parsing, comparison,
//! the canonical form the API server writes back, and the integer values the
//! scheduler adds up ([`milli_value`], [`value`]).
//!
//! Kubernetes stores a quantity as an exact decimal and always serializes it in
//! canonical form, so `cpu: 0.5` reads back as `500m` and `memory: 1024Mi` as
//! `1Gi`. We keep the exact value in nano-units (the finest precision
//! Kubernetes keeps; anything finer is rounded up, as `ParseQuantity` does),
//! which an `i128` holds comfortably up to the 2^63-1 cap Kubernetes applies.

use std::cmp::Ordering;

/// The error Kubernetes' decoder returns for a malformed quantity.
pub(crate) const FORMAT_ERROR: &str = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// The value of `s` in thousandths of a unit (CPU: millicores), rounded away
/// from zero as Kubernetes' `MilliValue()`; None when `s` is not a quantity.
pub fn milli_value(s: &str) -> Option<i64> {
    Quantity::parse(s).ok().map(|q| q.scaled_up(1_000_000))
}

/// The value of `s` in whole units (memory: bytes), rounded away from zero as
/// Kubernetes' `Value()`; None when `s` is not a quantity.
pub fn value(s: &str) -> Option<i64> {
    Quantity::parse(s).ok().map(|q| q.scaled_up(NANOS_PER_UNIT))
}
/// Kubernetes caps quantities at 2^63-1 units.
const MAX_NANOS: i128 = (i64::MAX as i128) * NANOS_PER_UNIT;

/// How a quantity was written, which decides how it is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `Ki`, `Mi`, ... (powers of 1024).
    BinarySI,
    /// `m`, ``, `k`, `M`, ... (powers of 1000).
    DecimalSI,
    /// `1e3`, `2E-2`.
    DecimalExponent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity {
    nanos: i128,
    format: Format,
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    /// Ordering is by value only; `1Gi` and `1073741824` are equal.
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl Quantity {
    pub(crate) fn parse(s: &str) -> Result<Self, &'static str> {
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(split);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(FORMAT_ERROR);
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let frac_part = frac_part.trim_end_matches('0');
        let (pow1024, exp10, format) = parse_suffix(suffix).ok_or(FORMAT_ERROR)?;

        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        // Nano-units: shift the decimal point by the suffix and by 9.
        let shift = i64::from(exp10) + 9 - frac_part.len() as i64;
        let nanos = if digits.is_empty() {
            0
        } else if digits.len() > 38 {
            // More digits than an i128 holds: only a huge negative shift could
            // bring that back into range, which no real manifest does; cap it.
            MAX_NANOS
        } else {
            let mantissa: i128 = digits.parse().map_err(|_| FORMAT_ERROR)?;
            scale(mantissa, pow1024, shift)
        };
        let nanos = nanos.min(MAX_NANOS);
        Ok(Self { nanos: if negative { -nanos } else { nanos }, format })
    }

    /// nanos / `divisor`, rounded away from zero, saturating at i64's range.
    fn scaled_up(&self, divisor: i128) -> i64 {
        let whole = self.nanos / divisor;
        let rounded = if self.nanos % divisor == 0 { whole } else { whole + self.nanos.signum() };
        rounded.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    pub(crate) fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    pub(crate) fn is_positive(&self) -> bool {
        self.nanos > 0
    }

    /// Whether the value is a whole number of units (extended resources must be).
    pub(crate) fn is_integer(&self) -> bool {
        self.nanos % NANOS_PER_UNIT == 0
    }

    /// Whether this is a whole multiple of `unit` (hugepages sizes).
    pub(crate) fn is_multiple_of(&self, unit: &Quantity) -> bool {
        unit.nanos != 0 && self.nanos % unit.nanos == 0
    }

    pub(crate) fn add(&self, other: &Quantity) -> Quantity {
        Quantity { nanos: (self.nanos + other.nanos).clamp(-MAX_NANOS, MAX_NANOS), format: self.format }
    }

    /// Rounds away from zero to whole milli-units, as Kubernetes' defaulting
    /// does for every resource list (`0.0001` CPU becomes `1m`).
    pub(crate) fn round_up_to_milli(&self) -> Quantity {
        const MILLI: i128 = 1_000_000;
        let rem = self.nanos % MILLI;
        let nanos = if rem == 0 { self.nanos } else { self.nanos - rem + rem.signum() * MILLI };
        Quantity { nanos, format: self.format }
    }

    /// The canonical string Kubernetes serializes: the largest suffix that
    /// keeps the value exact, in the format the quantity was written in.
    pub(crate) fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".to_string();
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.abs();
        let mut format = self.format;
        // Small binary values and fractional ones print in decimal, as
        // Kubernetes does to avoid confusing rounding.
        if format == Format::BinarySI && (abs < 1024 * NANOS_PER_UNIT || abs % NANOS_PER_UNIT != 0) {
            format = Format::DecimalSI;
        }
        if format == Format::BinarySI {
            let mut units = abs / NANOS_PER_UNIT;
            let mut power = 0;
            while power < 6 && units % 1024 == 0 {
                units /= 1024;
                power += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
            return format!("{sign}{units}{suffix}");
        }
        // Strip trailing zeros, then move the exponent down to a multiple of 3.
        let mut mantissa = abs;
        let mut exp: i32 = -9;
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exp += 1;
        }
        let r = exp.rem_euclid(3);
        mantissa *= 10i128.pow(r as u32);
        exp -= r;
        let suffix = match (format, exp) {
            (_, 0) => String::new(),
            (Format::DecimalSI, -9) => "n".into(),
            (Format::DecimalSI, -6) => "u".into(),
            (Format::DecimalSI, -3) => "m".into(),
            (Format::DecimalSI, 3) => "k".into(),
            (Format::DecimalSI, 6) => "M".into(),
            (Format::DecimalSI, 9) => "G".into(),
            (Format::DecimalSI, 12) => "T".into(),
            (Format::DecimalSI, 15) => "P".into(),
            (Format::DecimalSI, 18) => "E".into(),
            (_, e) => format!("e{e}"),
        };
        format!("{sign}{mantissa}{suffix}")
    }
}

/// `(power of 1024, power of 10, format)` of a suffix.
fn parse_suffix(suffix: &str) -> Option<(u32, i32, Format)> {
    let decimal = |e| Some((0, e, Format::DecimalSI));
    let binary = |p| Some((p, 0, Format::BinarySI));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        s if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => {
            let exp = &s[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Anything beyond this is far outside the 2^63 cap either way.
            let exp: i32 = exp.parse().ok().filter(|e: &i32| e.abs() <= 1000)?;
            Some((0, exp, Format::DecimalExponent))
        }
        _ => None,
    }
}

/// `mantissa * 1024^pow1024 * 10^shift`, rounded away from zero, capped.
fn scale(mantissa: i128, pow1024: u32, shift: i64) -> i128 {
    let Some(mut v) = 1024i128.checked_pow(pow1024).and_then(|m| mantissa.checked_mul(m)) else {
        return MAX_NANOS;
    };
    if shift >= 0 {
        for _ in 0..shift {
            match v.checked_mul(10) {
                Some(n) if n <= MAX_NANOS => v = n,
                _ => return MAX_NANOS,
            }
        }
        v
    } else {
        let div = -shift;
        if div > 38 {
            return 1; // a positive value finer than a nano rounds up to one
        }
        let d = 10i128.pow(div as u32);
        v / d + i128::from(v % d != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Quantity::parse(s).unwrap().canonical()
    }

    #[test]
    fn canonical_form_matches_what_kubernetes_writes_back() {
        assert_eq!(canon("0.5"), "500m");
        assert_eq!(canon("1000m"), "1");
        assert_eq!(canon("1.0"), "1");
        assert_eq!(canon("1500"), "1500");
        assert_eq!(canon("2000"), "2k");
        assert_eq!(canon("1024Mi"), "1Gi");
        assert_eq!(canon("1536Mi"), "1536Mi");
        assert_eq!(canon("0.5Gi"), "512Mi");
        assert_eq!(canon("1.5Ki"), "1536");
        assert_eq!(canon("128M"), "128M");
        assert_eq!(canon("1e3"), "1e3");
        assert_eq!(canon("1.5e3"), "1500");
        assert_eq!(canon("1E"), "1E");
        assert_eq!(canon("0"), "0");
        assert_eq!(canon("0Gi"), "0");
        assert_eq!(canon("-1"), "-1");
        assert_eq!(canon("100u"), "100u");
        assert_eq!(canon(".5"), "500m");
    }

    #[test]
    fn precision_finer_than_nano_is_rounded_up() {
        assert_eq!(canon("0.0000000001"), "1n");
    }

    #[test]
    fn malformed_quantities_are_rejected() {
        for bad in ["", "abc", "1.2.3", "1Qi", "1 Gi", ".", "1e", "1ee3", "Mi"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn comparison_is_by_value_across_formats() {
        let a = Quantity::parse("1Gi").unwrap();
        let b = Quantity::parse("1073741824").unwrap();
        assert_eq!(a.cmp(&b), Ordering::Equal);
        assert!(Quantity::parse("500m").unwrap() < Quantity::parse("1").unwrap());
    }

    #[test]
    fn milli_rounding_goes_away_from_zero() {
        assert_eq!(Quantity::parse("0.0001").unwrap().round_up_to_milli().canonical(), "1m");
        assert_eq!(Quantity::parse("100.5m").unwrap().round_up_to_milli().canonical(), "101m");
        assert_eq!(Quantity::parse("-0.0001").unwrap().round_up_to_milli().canonical(), "-1m");
        assert_eq!(Quantity::parse("250m").unwrap().round_up_to_milli().canonical(), "250m");
    }

    #[test]
    fn huge_values_are_capped_at_two_to_the_63() {
        let q = Quantity::parse("1e100").unwrap();
        assert_eq!(q.nanos, MAX_NANOS);
    }

    #[test]
    fn cpu_values_are_millicores_rounded_up() {
        assert_eq!(milli_value("500m"), Some(500));
        assert_eq!(milli_value("2"), Some(2000));
        assert_eq!(milli_value("0.5"), Some(500));
        assert_eq!(milli_value(".25"), Some(250));
        assert_eq!(milli_value("100u"), Some(1), "finer than a millicore rounds up");
        assert_eq!(milli_value("1e-3"), Some(1));
        assert_eq!(milli_value("2k"), Some(2_000_000));
    }

    #[test]
    fn memory_values_are_bytes_for_binary_decimal_and_exponent_suffixes() {
        assert_eq!(value("129e6"), Some(129_000_000));
        assert_eq!(value("129M"), Some(129_000_000));
        assert_eq!(value("123Mi"), Some(123 * 1024 * 1024));
        assert_eq!(value("1.5Gi"), Some(1_610_612_736));
        assert_eq!(value("1Ei"), Some(1 << 60));
        assert_eq!(value("1E"), Some(1_000_000_000_000_000_000), "E alone is exa, not an exponent");
        assert_eq!(value("1e+3"), Some(1000));
        assert_eq!(value("500m"), Some(1), "a fraction of a byte rounds up");
        assert_eq!(value("-5"), Some(-5));
        assert_eq!(value("8Ei"), Some(i64::MAX), "saturates instead of overflowing");
        assert_eq!(value("1e100"), Some(i64::MAX));
    }

    #[test]
    fn malformed_quantities_have_no_value() {
        for bad in ["", "abc", "1.2.3", "1Qi", "1 Gi", ".", "1e", "1ee3", "Mi", "1mi", "1e3.5", "-"] {
            assert_eq!(value(bad), None, "{bad:?} should not parse");
        }
    }
}
