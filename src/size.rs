//! Human byte sizes: `1048576`, `8MiB`, `16 MiB`, `1.5 GB`.

use crate::{Error, Result};

/// Parse a size in bytes with an optional unit.
///
/// Decimal units (`KB`, `MB`, `GB`, `TB`) are powers of 1000, binary units (`KiB`,
/// `MiB`, `GiB`, `TiB`) and the single letters (`K`, `M`, `G`, `T`) are powers of 1024,
/// as in curl. Units are case-insensitive; a fraction is allowed with a unit.
///
/// ```
/// use tusflow::size::parse_size;
/// assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
/// assert_eq!(parse_size("16 MB").unwrap(), 16_000_000);
/// assert_eq!(parse_size("1.5k").unwrap(), 1536);
/// assert!(parse_size("8 parsecs").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(format!(
            "invalid size {text:?}: expected bytes, or a number with a unit \
             (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
        ))
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(bad());
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(bad);
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let v = f * mult as f64;
    if mult == 1 || !v.is_finite() || v >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("16 MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("2gb").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("10B").unwrap(), 10);
        for bad in [
            "",
            "MiB",
            "1.5",
            "1..5M",
            "-1",
            "1 XB",
            "99999999999999999999",
            "1e3",
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
