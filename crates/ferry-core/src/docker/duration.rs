//! Times as docker shows them: `units.HumanDuration` ("Up 9 seconds", "2 hours ago")
//! and Go's `time.Time.String()` ("2026-12-04 21:54:12.13323949 +0000 UTC").

/// go-units' `HumanDuration` for a whole number of seconds.
pub fn human(secs: i64) -> String {
    let hours = (secs + 1800) / 3600; // Go rounds to the hour here
    match secs {
        s if s < 1 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s / 60 == 1 => "About a minute".into(),
        s if s / 60 < 60 => format!("{} minutes", s / 60),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        s => format!("{} years", s / 3600 / 24 / 365),
    }
}

/// An RFC 3339 UTC time (`…T21:54:12.133239490Z`, as ferryd stores them) the way Go
/// prints a `time.Time`: trailing zeros of the fraction dropped, `+0000 UTC`.
pub fn go_time_string(rfc3339: &str) -> String {
    let Some(t) = rfc3339.strip_suffix('Z') else {
        return rfc3339.to_string();
    };
    let t = t.replacen('T', " ", 1);
    let t = match t.split_once('.') {
        Some((whole, frac)) => match frac.trim_end_matches('0') {
            "" => whole.to_string(),
            f => format!("{whole}.{f}"),
        },
        None => t,
    };
    format!("{t} +0000 UTC")
}

/// Seconds since the epoch of an RFC 3339 UTC time (`2026-12-04T21:54:12.13Z`) or a
/// date (`2026-12-04`); None for anything else.
pub fn rfc3339_unix(s: &str) -> Option<f64> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, t.strip_suffix('Z')?),
        None => (s, "00:00:00"),
    };
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    Some((days_from_civil(y, m, day) * 86400 + hh * 3600 + mm * 60) as f64 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_dockers() {
        assert_eq!(human(0), "Less than a second");
        assert_eq!(human(1), "1 second");
        assert_eq!(human(9), "9 seconds");
        assert_eq!(human(90), "About a minute");
        assert_eq!(human(600), "10 minutes");
        assert_eq!(human(3600), "About an hour");
        assert_eq!(human(5 * 3600), "5 hours");
        assert_eq!(human(3 * 86400), "3 days");
        assert_eq!(human(20 * 86400), "2 weeks");
        assert_eq!(human(90 * 86400), "3 months");
        assert_eq!(human(800 * 86400), "2 years");
    }

    #[test]
    fn rfc3339_times_read_as_unix_seconds() {
        assert_eq!(rfc3339_unix("1970-01-01T00:00:10Z"), Some(10.0));
        assert_eq!(
            rfc3339_unix("2026-12-04T21:54:12.5Z"),
            Some(1_796_421_252.5)
        );
        assert_eq!(rfc3339_unix("2000-03-01"), Some(951_868_800.0));
        assert_eq!(rfc3339_unix("yesterday"), None);
    }

    #[test]
    fn times_print_as_go_prints_them() {
        assert_eq!(
            go_time_string("2026-12-04T21:54:12.133239490Z"),
            "2026-12-04 21:54:12.13323949 +0000 UTC"
        );
        assert_eq!(
            go_time_string("2026-12-04T21:54:12.000Z"),
            "2026-12-04 21:54:12 +0000 UTC"
        );
    }
}
