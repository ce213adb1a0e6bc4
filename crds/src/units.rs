//! Memory quantities and durations as the CacheCluster spells them (Kubernetes
//! quantities like `256Mi`, Go durations like `1h30m`, the formats `kubectl` users
//! already write and CEL's `quantity()` and `duration()` read), and their translation
//! to what `kcache-node` flags parse (`268435456`, `90s`).

use std::fmt;
use std::time::Duration;

/// A value in the spec that does not parse; `field` is its path, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    /// The spec path of the offending value, e.g. `spec.maxMemory`.
    pub field: String,
    /// What is wrong with it, in words a user can act on.
    pub message: String,
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for UnitError {}

/// Bytes in a Kubernetes quantity (`1Gi`, `500M`, `1.5Gi`, `1e9`, `1073741824`),
/// rounded down to a whole byte. Negative and unparsable values are errors.
pub fn quantity_bytes(field: &str, quantity: &str) -> Result<u64, UnitError> {
    let err = |message: &str| UnitError {
        field: field.to_owned(),
        message: format!("{quantity:?} {message}"),
    };
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(err("is not a quantity (expected e.g. 256Mi or 1Gi)"));
    }
    let digits = format!("{whole}{fraction}");
    let mantissa: u128 = digits
        .parse()
        .map_err(|_| err("is not a quantity (expected e.g. 256Mi or 1Gi)"))?;
    let scale = 10u128.pow(u32::try_from(fraction.len()).unwrap_or(u32::MAX).min(30));
    let (multiplier, divisor) = suffix_factor(suffix)
        .ok_or_else(|| err("has an unknown unit (use Ki, Mi, Gi, k, M, G)"))?;
    let bytes = mantissa
        .checked_mul(multiplier)
        .map(|b| b / scale / divisor)
        .ok_or_else(|| err("is too large"))?;
    u64::try_from(bytes).map_err(|_| err("is too large"))
}

/// The multiplier and divisor of a quantity suffix.
fn suffix_factor(suffix: &str) -> Option<(u128, u128)> {
    let binary = |power: u32| Some((1u128 << (10 * power), 1));
    let decimal = |power: u32| Some((10u128.pow(3 * power), 1));
    match suffix {
        "" => Some((1, 1)),
        "m" => Some((1, 1000)),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "k" => decimal(1),
        "M" => decimal(2),
        "G" => decimal(3),
        "T" => decimal(4),
        "P" => decimal(5),
        "E" => decimal(6),
        exponent => {
            let power = exponent.strip_prefix(['e', 'E'])?.parse::<i32>().ok()?;
            match power {
                0..=30 => Some((10u128.pow(power.unsigned_abs()), 1)),
                -30..=-1 => Some((1, 10u128.pow(power.unsigned_abs()))),
                _ => None,
            }
        }
    }
}

/// A byte count as `kcache-node --max-memory` reads it: in the largest binary unit
/// that divides it (`3GiB`, `256MiB`, what a person expects to see in `ps`), else in
/// plain bytes.
pub fn node_bytes(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A byte count as a Kubernetes quantity (`256Mi`), for status and messages.
pub fn quantity_string(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"];
    for (i, unit) in UNITS.iter().enumerate() {
        let size = 1u64 << (10 * (UNITS.len() - i));
        if bytes != 0 && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// A Go duration (`30s`, `1h30m`, `250ms`), the format CEL's `duration()` reads.
pub fn duration(field: &str, text: &str) -> Result<Duration, UnitError> {
    let err = || UnitError {
        field: field.to_owned(),
        message: format!("{text:?} is not a duration (expected e.g. 30s, 10m or 1h30m)"),
    };
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let value: u64 = rest[..digits].parse().map_err(|_| err())?;
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let unit = &rest[digits..digits + unit_len];
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => return Err(err()),
        };
        total = total.saturating_add(part);
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

/// A duration as `kcache-node` flags read it: whole seconds (`90s`) when it has no
/// millisecond part, else milliseconds.
pub fn node_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(q: &str) -> u64 {
        quantity_bytes("spec.maxMemory", q).unwrap()
    }

    #[test]
    fn binary_decimal_fractional_and_exponent_quantities_parse_to_bytes() {
        assert_eq!(bytes("256Mi"), 256 << 20);
        assert_eq!(bytes("1Gi"), 1 << 30);
        assert_eq!(bytes("1.5Gi"), 3 << 29);
        assert_eq!(bytes("500M"), 500_000_000);
        assert_eq!(bytes("1e9"), 1_000_000_000);
        assert_eq!(bytes("1073741824"), 1 << 30);
        assert_eq!(bytes("1500m"), 1);
    }

    #[test]
    fn bad_quantities_name_the_field() {
        for q in ["", "abc", "-1Gi", "1GB", "1.2.3Mi", "99999999999Ei"] {
            let err = quantity_bytes("spec.maxMemory", q).unwrap_err();
            assert_eq!(err.field, "spec.maxMemory", "{q}");
            assert!(err.to_string().starts_with("spec.maxMemory: "), "{err}");
        }
    }

    #[test]
    fn node_flags_get_mib_when_whole_and_bytes_otherwise() {
        assert_eq!(node_bytes(256 << 20), "256MiB");
        assert_eq!(node_bytes(3 << 30), "3GiB");
        assert_eq!(node_bytes(1536 << 10), "1536KiB");
        assert_eq!(node_bytes(1_000_000_000), "1000000000");
        assert_eq!(quantity_string(3 << 29), "1536Mi");
        assert_eq!(quantity_string(1 << 30), "1Gi");
        assert_eq!(quantity_string(1000), "1000");
    }

    #[test]
    fn go_durations_parse_and_render_for_the_node() {
        assert_eq!(duration("f", "30s").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("f", "1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            duration("f", "1s500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(node_duration(Duration::from_secs(90)), "90s");
        assert_eq!(node_duration(Duration::from_millis(1500)), "1500ms");
        for bad in ["", "30", "s", "1d", "1.5h", "-1s"] {
            assert!(duration("f", bad).is_err(), "{bad}");
        }
    }
}
