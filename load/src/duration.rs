//! Durations written in BUILD.yaml (`limits: {time: 10m}`): a whole number
//! followed by `s`, `m` or `h`. A bare number is refused rather than read
//! as seconds: `time: 10` meant as minutes would kill every step early.

use std::time::Duration;

/// The longest time limit: a year. Anything longer is a typo, or no limit
/// at all (then drop it).
pub const MAX_TIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a time limit; the error says what is wrong with it.
pub fn parse_time(text: &str) -> Result<Duration, &'static str> {
    let text = text.trim();
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return Err("not a whole number with a unit");
    }
    let (number, unit) = text.split_at(digits);
    let seconds_per = match unit.trim_start() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "" => return Err("no unit: write `90s`, `10m` or `2h`"),
        _ => return Err("not a whole number with a unit"),
    };
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds_per))
        .filter(|s| *s <= MAX_TIME.as_secs())
        .ok_or("longer than a year")?;
    if seconds == 0 {
        return Err("zero would stop the step before it starts");
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_minutes_and_hours() {
        assert_eq!(parse_time("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_time("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_time("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_time(" 1 s "), Ok(Duration::from_secs(1)));
        assert_eq!(parse_time("8760h"), Ok(MAX_TIME));
    }

    #[test]
    fn bare_fractional_zero_negative_and_huge_times_are_refused() {
        for bad in [
            "90",
            "1.5h",
            "-1s",
            "s",
            "",
            "0s",
            "1d",
            "10 min",
            "1h30m",
            "8761h",
            "99999999999999999999s",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_time("90"), Err("no unit: write `90s`, `10m` or `2h`"));
    }
}
