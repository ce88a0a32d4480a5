//! Civil dates (proleptic Gregorian, UTC) and the fixed-width timestamp
//! texts the logs print: one place for the calendar arithmetic that the
//! error log, the access log and certificate expiry dates all need.
//!
//! The texts are built into arrays without `fmt`: the access log prints
//! one per request (cached per second, but the first line of each second
//! still builds it on the worker's loop).

/// Days since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let march_based = (month + 9) % 12;
    let day_of_year = (153 * march_based + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_based = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_based + 2) / 5 + 1;
    let month = if march_based < 10 {
        march_based + 3
    } else {
        march_based - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// A moment `secs` after the epoch, broken down.
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: u64,
    minute: u64,
    second: u64,
}

impl Civil {
    fn of(secs: u64) -> Civil {
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let of_day = secs % 86_400;
        Civil {
            // Four digits are printed; a clock past 9999 prints 9999.
            year: year.clamp(0, 9999),
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
        }
    }
}

/// `2026-12-07T15:04:05`: RFC 3339 up to the seconds, UTC.
pub fn rfc3339_seconds(secs: u64) -> [u8; 19] {
    let c = Civil::of(secs);
    let mut out = *b"0000-00-00T00:00:00";
    put_digits(&mut out[0..4], c.year as u64);
    put_digits(&mut out[5..7], c.month as u64);
    put_digits(&mut out[8..10], c.day as u64);
    put_digits(&mut out[11..13], c.hour);
    put_digits(&mut out[14..16], c.minute);
    put_digits(&mut out[17..19], c.second);
    out
}

/// `07/Dec/2026:15:04:05 +0000`: the common log format's time, UTC.
pub fn clf_seconds(secs: u64) -> [u8; 26] {
    let c = Civil::of(secs);
    let mut out = *b"00/Jan/0000:00:00:00 +0000";
    put_digits(&mut out[0..2], c.day as u64);
    out[3..6].copy_from_slice(MONTHS[(c.month as usize).clamp(1, 12) - 1]);
    put_digits(&mut out[7..11], c.year as u64);
    put_digits(&mut out[12..14], c.hour);
    put_digits(&mut out[15..17], c.minute);
    put_digits(&mut out[18..20], c.second);
    out
}

/// `007`: milliseconds, three digits.
pub fn millis(ms: u32) -> [u8; 3] {
    let mut out = [b'0'; 3];
    put_digits(&mut out, u64::from(ms.min(999)));
    out
}

/// `n` in decimal, zero-padded to fill `out` (higher digits dropped).
fn put_digits(out: &mut [u8], mut n: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_become_dates_and_back() {
        let cases = [
            (0, (1970, 1, 1)),
            (-1, (1969, 12, 31)),
            (59, (1970, 3, 1)),
            (10_956, (1999, 12, 31)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (19_782, (2024, 2, 29)),
            (20_454, (2026, 1, 1)),
            (47_541, (2100, 3, 1)),
        ];
        for (days, date) in cases {
            assert_eq!(civil_from_days(days), date, "day {days}");
            assert_eq!(days_from_civil(date.0, date.1, date.2), days, "{date:?}");
        }
        for days in (-800_000..3_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn timestamp_texts() {
        // 2024-02-29 (a leap day) 23:59:59 UTC.
        let secs = 1_709_251_199;
        assert_eq!(&rfc3339_seconds(secs), b"2024-02-29T23:59:59");
        assert_eq!(&clf_seconds(secs), b"29/Feb/2024:23:59:59 +0000");
        assert_eq!(&rfc3339_seconds(0), b"1970-01-01T00:00:00");
        assert_eq!(&clf_seconds(1_796_655_845), b"07/Dec/2026:15:04:05 +0000");
        assert_eq!(&millis(7), b"007");
        assert_eq!(&millis(999), b"999");
        assert_eq!(&rfc3339_seconds(u64::MAX / 2)[..4], b"9999");
    }

    /// Every month name and both two-digit fields agree with chrono-free
    /// arithmetic over a whole leap year, hour by hour.
    #[test]
    fn a_year_hour_by_hour() {
        let start = days_from_civil(2028, 1, 1) as u64 * 86_400;
        for h in 0..366 * 24 {
            let secs = start + h * 3600 + 61;
            let rfc = rfc3339_seconds(secs);
            let clf = clf_seconds(secs);
            let text = std::str::from_utf8(&rfc).unwrap();
            let (y, m, d) = (&text[0..4], &text[5..7], &text[8..10]);
            let month: usize = m.parse().unwrap();
            let expected = format!(
                "{d}/{}/{y}:{}:01:01 +0000",
                std::str::from_utf8(MONTHS[month - 1]).unwrap(),
                &text[11..13]
            );
            assert_eq!(std::str::from_utf8(&clf).unwrap(), expected);
            assert_eq!(text[11..13].parse::<u64>().unwrap(), h % 24);
        }
    }
}
