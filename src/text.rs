//! Sizes and durations as walhook writes them for people (`walhook status`, the backfill's
//! progress line and what it waits for).

use std::time::Duration;

/// `512 bytes`, `41.2 MB` (units of 1024).
pub fn size(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["bytes", "kB", "MB", "GB"] {
        if value < 1024.0 {
            return if unit == "bytes" {
                format!("{bytes} bytes")
            } else {
                format!("{value:.1} {unit}")
            };
        }
        value /= 1024.0;
    }
    format!("{value:.1} TB")
}

/// `45s`, `2m 10s`, `3h 5m`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(size(1023), "1023 bytes");
        assert_eq!(size(1536), "1.5 kB");
        assert_eq!(size(5 << 40), "5.0 TB");
        assert_eq!(duration(Duration::from_secs(59)), "59s");
        assert_eq!(duration(Duration::from_secs(130)), "2m 10s");
        assert_eq!(duration(Duration::from_secs(11_100)), "3h 5m");
    }
}
