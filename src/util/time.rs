//! Wall-clock formatting without a date crate: UTC timestamps for logs and
//! Common Log Format dates.

use std::time::{SystemTime, UNIX_EPOCH};

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Seconds and microseconds since the epoch (0 before it).
pub fn unix_parts(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_micros()),
        Err(_) => (0, 0),
    }
}

/// `2026-11-27T23:50:42.123Z` with `digits` (0, 3 or 6) fractional digits.
pub fn utc_timestamp(t: SystemTime, digits: u32) -> String {
    let (secs, micros) = unix_parts(t);
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let (h, mi, se) = (s / 3600, s % 3600 / 60, s % 60);
    match digits {
        0 => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}Z"),
        3 => format!(
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}.{:03}Z",
            micros / 1000
        ),
        _ => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}.{micros:06}Z"),
    }
}

/// Common Log Format date: `27/Nov/2026:23:50:42 +0000`.
pub fn clf_date(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (secs, _) = unix_parts(t);
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{d:02}/{}/{y:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[(mo - 1) as usize],
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// `now + d`, or as far as an `Instant` goes (a year on) when that would
/// overflow: a configured timeout never panics, however large.
pub fn after(now: std::time::Instant, d: std::time::Duration) -> std::time::Instant {
    const YEAR: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);
    now.checked_add(d)
        .or_else(|| now.checked_add(YEAR))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        let t = UNIX_EPOCH + Duration::from_micros(1_732_752_000_123_456);
        assert_eq!(utc_timestamp(t, 6), "2024-11-28T00:00:00.123456Z");
        assert_eq!(utc_timestamp(t, 3), "2024-11-28T00:00:00.123Z");
        assert_eq!(clf_date(t), "28/Nov/2024:00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_825_599); // 2000-02-29T11:59:59
        assert_eq!(utc_timestamp(leap, 0), "2000-02-29T11:59:59Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH, 0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn deadlines_never_overflow() {
        let now = std::time::Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(after(now, Duration::MAX) > now);
        assert!(after(now, Duration::from_secs_f64(1e19)) > now);
    }
}
