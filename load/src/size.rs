//! Sizes written in BUILD.yaml (`limits: {memory: 512MiB}`): a whole number
//! of bytes, or a whole number followed by a binary unit. `K`, `M`, `G` and
//! `T` mean KiB, MiB, GiB and TiB, as in Docker's `--memory` and `ulimit`;
//! `KB`, `MB`, ... are refused rather than guessed at, since they mean
//! powers of 1,000 elsewhere.

/// The smallest memory limit: below it not even a shell starts, so a
/// smaller value is a typo (`512K` for `512M`).
pub const MIN_MEMORY: u64 = 1 << 20;

/// Parses a memory size in bytes; the error says what is wrong with it.
pub fn parse_memory(text: &str) -> Result<u64, &'static str> {
    let text = text.trim();
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return Err("not a whole number with a unit");
    }
    let (number, unit) = text.split_at(digits);
    let shift = match unit.trim_start() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return Err("not a whole number with a unit"),
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|b| *b < 1 << 62)
        .ok_or("too large")?;
    if bytes < MIN_MEMORY {
        return Err("less than 1 MiB");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_units_and_plain_bytes() {
        assert_eq!(parse_memory("512MiB"), Ok(512 << 20));
        assert_eq!(parse_memory("64M"), Ok(64 << 20));
        assert_eq!(parse_memory("2GiB"), Ok(2 << 30));
        assert_eq!(parse_memory("1G"), Ok(1 << 30));
        assert_eq!(parse_memory("1 TiB"), Ok(1 << 40));
        assert_eq!(parse_memory("4096K"), Ok(4 << 20));
        assert_eq!(parse_memory("1048576"), Ok(1 << 20));
        assert_eq!(parse_memory("2097152B"), Ok(2 << 20));
    }

    #[test]
    fn ambiguous_fractional_small_and_huge_sizes_are_refused() {
        for bad in [
            "512MB", "1gb", "1.5G", "-1M", "M", "", "512K", "0", "9999999T", "12 34M",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }
}
