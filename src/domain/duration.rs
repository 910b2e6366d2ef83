//! Durations as operators write them: `30s`, `15m`, `12h`, `30d`, or plain seconds.

use std::time::Duration;

use super::{DomainError, DomainResult};

/// Parses `30s`, `15m`, `12h`, `30d` or plain seconds (`0` is zero).
pub fn parse_duration(s: &str) -> DomainResult<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| DomainError::invalid(format!("`{s}` is not a duration like 12h or 30d")))?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(DomainError::invalid(format!(
                "`{s}`: the unit must be s, m, h or d"
            )));
        }
    };
    n.checked_mul(unit_secs)
        .filter(|&secs| secs <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| DomainError::invalid(format!("`{s}` is longer than 100 years")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_refusals() {
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(2_592_000)
        );
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration(" 90 ").unwrap(), Duration::from_secs(90));
        for bad in ["", "d", "1w", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
