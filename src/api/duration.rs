//! Go-style duration strings (`500ms`, `30s`, `1m30s`, `2h`), as Flagger manifests write them.
//!
//! Flagger parses these with Go's `time.ParseDuration`; serin accepts the same units so that
//! existing manifests keep their meaning, and formats durations back the way Go prints them.

use std::fmt;
use std::time::Duration;

/// Regular expression the CRD schema applies to every duration field.
///
/// Kept in one place so the admission check and [`parse`] agree on what a duration is.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The input was empty.
    #[error("empty duration, expected a value such as 30s, 1m or 1m30s")]
    Empty,
    /// A number was not followed by a unit.
    #[error("missing unit in duration {0:?}: use ns, us, ms, s, m or h")]
    MissingUnit(String),
    /// A unit was not one of Go's.
    #[error("unknown unit {unit:?} in duration {input:?}: use ns, us, ms, s, m or h")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// Something other than a number stood where a number was expected.
    #[error("invalid duration {0:?}, expected a value such as 30s, 1m or 1m30s")]
    Invalid(String),
    /// The value does not fit in a `std::time::Duration`.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses a Go-style duration such as `1m30s`, `500ms` or `1.5h`.
///
/// Negative durations are rejected: nothing in a Canary can wait for a negative time.
/// A bare `0` is accepted, as in Go.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(DurationError::Invalid(input.to_string()));
        }
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_string()));
        }
        let (unit, after_unit) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: unit.to_string(),
                    input: input.to_string(),
                });
            }
        };
        total_nanos = total_nanos
            .checked_add(component_nanos(number, unit_nanos, input)?)
            .ok_or_else(|| DurationError::Overflow(input.to_string()))?;
        rest = after_unit;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000)
        .map_err(|_| DurationError::Overflow(input.to_string()))?;
    // The remainder is below one billion, so it always fits in u32.
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Value of one `<number><unit>` component in nanoseconds, computed in integers so that
/// `0.1s` is exactly 100ms rather than a float approximation.
fn component_nanos(number: &str, unit_nanos: u128, input: &str) -> Result<u128, DurationError> {
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(DurationError::Invalid(input.to_string()));
    }
    let overflow = || DurationError::Overflow(input.to_string());
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| overflow())?
    };
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(overflow)?;
    let mut scale = unit_nanos;
    for digit in frac.chars() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        let d = u128::from(digit.to_digit(10).ok_or_else(overflow)?);
        nanos = nanos.checked_add(d * scale).ok_or_else(overflow)?;
    }
    Ok(nanos)
}

/// Formats a duration the way Go's `time.Duration.String` does: `1m30s`, `500ms`, `2h0m0s`.
///
/// Whole seconds and above print as `h`/`m`/`s` components; durations under a second use the
/// largest sub-second unit that keeps the value whole where possible (`500ms`, `1.5ms`).
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let total_nanos = d.as_nanos();
    if total_nanos < 1_000_000_000 {
        let (unit, scale) = if total_nanos < 1_000 {
            ("ns", 1)
        } else if total_nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", decimal(total_nanos, scale));
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let seconds = decimal(
        u128::from(s) * 1_000_000_000 + u128::from(d.subsec_nanos()),
        1_000_000_000,
    );
    if h > 0 {
        format!("{h}h{m}m{seconds}s")
    } else if m > 0 {
        format!("{m}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / scale` as a decimal without trailing zeros.
fn decimal(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A duration that prints in Go's format, for log fields and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_the_durations_flagger_manifests_use() {
        let cases = [
            ("1s", Duration::from_secs(1)),
            ("30s", Duration::from_secs(30)),
            ("1m", Duration::from_secs(60)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", ms(500)),
            ("2h", Duration::from_secs(7200)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("1.5h", Duration::from_secs(5400)),
            ("0.1s", ms(100)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("10ns", Duration::from_nanos(10)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input), Ok(expected), "parsing {input:?}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert!(matches!(parse("10"), Err(DurationError::MissingUnit(_))));
        assert!(matches!(
            parse("5d"),
            Err(DurationError::UnknownUnit { ref unit, .. }) if unit == "d"
        ));
        assert!(matches!(parse("-5s"), Err(DurationError::Invalid(_))));
        assert!(matches!(parse("s"), Err(DurationError::Invalid(_))));
        assert!(matches!(parse("1..5s"), Err(DurationError::Invalid(_))));
        assert!(matches!(
            parse("1 m"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse("99999999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn error_messages_name_the_accepted_units() {
        let message = parse("5d").unwrap_err().to_string();
        assert!(message.contains("ns, us, ms, s, m or h"), "{message}");
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (ms(500), "500ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(10), "10ns"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(7200), "2h0m0s"),
            (ms(1500), "1.5s"),
        ];
        for (d, expected) in cases {
            assert_eq!(format(d), expected, "formatting {d:?}");
            assert_eq!(GoDuration(d).to_string(), expected);
        }
    }

    #[test]
    fn format_then_parse_is_identity() {
        for d in [
            ms(1),
            ms(999),
            ms(1001),
            Duration::from_secs(3661),
            ms(123_456),
        ] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
