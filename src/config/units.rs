//! Durations (`"500ms"`, `"10s"`, `"5m"`, `"3d"`), byte sizes (`"1GB"`, `"512MB"`) and rates
//! (`"50/s"`, `"3000/m"`).

use std::time::Duration;

use super::RateLimit;

/// Parses `<integer><unit>` with unit ms, s, m, h or d.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = split_number(text.trim())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
}

/// Parses `<integer><unit>` with unit B, kB, MB, GB or TB (powers of 1024, as Postgres reads
/// them), also written KiB, MiB, GiB, TiB.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let (number, unit) = split_number(text.trim())?;
    let shift = match unit {
        "B" => 0,
        "kB" | "KB" | "KiB" => 10,
        "MB" | "MiB" => 20,
        "GB" | "GiB" => 30,
        "TB" | "TiB" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

/// Parses a rate `<integer>/<unit>` with unit s, m or h (`"50/s"`, `"3000/m"`): a positive
/// count per second, minute or hour.
pub fn parse_rate(text: &str) -> Option<RateLimit> {
    let (count, unit) = text.trim().split_once('/')?;
    let count = count.trim();
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let requests: u32 = count.parse().ok().filter(|&n| n > 0)?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        _ => return None,
    };
    Some(RateLimit {
        requests,
        per: Duration::from_secs(secs),
    })
}

fn split_number(text: &str) -> Option<(u64, &str)> {
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    if digits == 0 {
        return None;
    }
    Some((text[..digits].parse().ok()?, text[digits..].trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("500ms", 500),
            ("10s", 10_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("3d", 259_200_000),
            ("0s", 0),
            (" 1 s", 1_000),
        ];
        for (text, millis) in ok {
            assert_eq!(
                parse_duration(text),
                Some(Duration::from_millis(millis)),
                "{text}"
            );
        }
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "10 sec",
            "1w",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn rates() {
        let ok = [
            ("50/s", 50, 1),
            ("3000/m", 3000, 60),
            ("100/h", 100, 3600),
            (" 1 / s ", 1, 1),
        ];
        for (text, requests, secs) in ok {
            let rate = parse_rate(text).unwrap_or_else(|| panic!("{text} parses"));
            assert_eq!(rate.requests, requests, "{text}");
            assert_eq!(rate.per, Duration::from_secs(secs), "{text}");
        }
        assert_eq!(parse_rate("3000/m").map(|r| r.per_second()), Some(50.0));
        assert_eq!(
            parse_rate("50/s").map(|r| r.to_string()).as_deref(),
            Some("50/s")
        );
        for bad in [
            "",
            "50",
            "/s",
            "0/s",
            "-5/s",
            "1.5/s",
            "50/d",
            "50/sec",
            "50 per s",
            "s/50",
            "99999999999/s",
        ] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
    }

    #[test]
    fn byte_sizes() {
        let ok = [
            ("1GB", 1 << 30),
            ("512MB", 512 << 20),
            ("64kB", 64 << 10),
            ("2TiB", 2 << 40),
            ("100B", 100),
        ];
        for (text, bytes) in ok {
            assert_eq!(parse_bytes(text), Some(bytes), "{text}");
        }
        for bad in ["", "1", "GB", "1.5GB", "1PB", "-1GB"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }
}
