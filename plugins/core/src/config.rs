//! Values of config files and flags: human sizes (`16 MiB`) and durations (`250ms`),
//! with serde helpers so plugin config structs can take either a number or a string.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{Error, Result};

/// Parse a size in bytes with an optional unit.
///
/// Decimal units (`KB`, `MB`, `GB`, `TB`) are powers of 1000, binary units (`KiB`,
/// `MiB`, `GiB`, `TiB`) and the single letters (`K`, `M`, `G`, `T`) are powers of 1024,
/// as in curl. Units are case-insensitive; a fraction is allowed with a unit.
///
/// ```
/// use tusflow_core::config::parse_size;
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

/// Parse a duration: a number of seconds (`1.5`), or a number with a unit (`250ms`,
/// `2s`, `1.5m`, `1h`).
///
/// ```
/// use std::time::Duration;
/// use tusflow_core::config::parse_duration;
/// assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
/// assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
/// ```
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || {
        Error::invalid(format!(
            "invalid duration {text:?}: expected seconds, or a number with a unit (ms, s, m, h)"
        ))
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let secs: f64 = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(n * secs).map_err(|_| bad())
}

/// A number or a text, as a config value may be given; anything else is an error that
/// says what was expected (not serde's "did not match any variant").
enum NumOrText {
    Int(u64),
    Float(f64),
    Text(String),
}

struct NumOrTextVisitor(&'static str);

impl<'de> serde::de::Visitor<'de> for NumOrTextVisitor {
    type Value = NumOrText;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<NumOrText, E> {
        Ok(NumOrText::Int(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<NumOrText, E> {
        u64::try_from(v)
            .map(NumOrText::Int)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<NumOrText, E> {
        if v < 0.0 {
            return Err(E::invalid_value(serde::de::Unexpected::Float(v), &self));
        }
        Ok(NumOrText::Float(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<NumOrText, E> {
        Ok(NumOrText::Text(v.to_owned()))
    }
}

impl NumOrText {
    fn read<'de, D: Deserializer<'de>>(
        d: D,
        expecting: &'static str,
    ) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(NumOrTextVisitor(expecting))
    }
}

impl<'de> Deserialize<'de> for NumOrText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        NumOrText::read(d, DURATION_EXPECTED)
    }
}

const SIZE_EXPECTED: &str = "a size: a number of bytes, or a text such as \"50 MB\" or \"8 MiB\"";
const DURATION_EXPECTED: &str =
    "a duration: a number of seconds, or a text such as \"250ms\", \"30s\" or \"5m\"";

/// A duration as config files write it: `30s`, `250ms`, `1.5s`.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) && d.as_secs() == 0 {
        format!("{}ms", d.subsec_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Serde helpers: `#[serde(with = "tusflow_core::config::size")]` takes `1048576` or
/// `"1 MiB"`.
pub mod size {
    use super::*;

    /// Deserialize a size.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
        match NumOrText::read(d, SIZE_EXPECTED)? {
            NumOrText::Int(n) => Ok(n),
            NumOrText::Float(f) if f >= 0.0 && f.fract() == 0.0 => Ok(f as u64),
            NumOrText::Float(f) => Err(serde::de::Error::custom(format!("invalid size {f}"))),
            NumOrText::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
        }
    }

    /// Serialize a size as bytes.
    pub fn serialize<S: serde::Serializer>(v: &u64, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }
}

/// Serde helpers: `#[serde(with = "tusflow_core::config::duration")]` takes `2` (seconds),
/// `0.25` or `"250ms"`.
pub mod duration {
    use super::*;

    /// Deserialize a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
        match NumOrText::read(d, DURATION_EXPECTED)? {
            NumOrText::Int(n) => Ok(Duration::from_secs(n)),
            NumOrText::Float(f) => Duration::try_from_secs_f64(f).map_err(serde::de::Error::custom),
            NumOrText::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
        }
    }

    /// Serialize a duration with its unit (`"30s"`, `"250ms"`).
    pub fn serialize<S: serde::Serializer>(
        v: &Duration,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*v))
    }
}

/// Serde helpers for a list of durations (tus-js-client's `retryDelays`).
pub mod durations {
    use super::*;

    /// Deserialize a list of durations.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<Vec<Duration>>, D::Error> {
        let items: Option<Vec<NumOrText>> = Option::deserialize(d)?;
        items
            .map(|v| {
                v.into_iter()
                    .map(|x| match x {
                        NumOrText::Int(n) => Ok(Duration::from_secs(n)),
                        NumOrText::Float(f) => {
                            Duration::try_from_secs_f64(f).map_err(serde::de::Error::custom)
                        }
                        NumOrText::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
                    })
                    .collect()
            })
            .transpose()
    }

    /// Serialize a list of durations with their units.
    pub fn serialize<S: serde::Serializer>(
        v: &Option<Vec<Duration>>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::Serialize;
        v.as_ref()
            .map(|v| v.iter().copied().map(format_duration).collect::<Vec<_>>())
            .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_written_with_units_read_back() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(30),
            Duration::from_millis(250),
            Duration::from_millis(1500),
            Duration::from_secs(3600),
        ] {
            let text = format_duration(d);
            assert!(text.ends_with('s'), "{text}");
            assert_eq!(parse_duration(&text).unwrap(), d, "{text}");
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_says_what_was_expected() {
        #[derive(Debug, serde::Deserialize)]
        struct C {
            #[serde(with = "size")]
            _s: u64,
        }
        use figment::providers::Format as _;
        let err = figment::Figment::from(figment::providers::Toml::string("_s = true"))
            .extract::<C>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("a size: a number of bytes"), "{err}");
        assert!(!err.contains("variant"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "ms", "1 fortnight", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

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
