//! Reading SQLite's text timestamps quickly.
//!
//! SQLite has no timestamp type: the service stores `created_at` and
//! `updated_at` as UTC text in the one format diesel writes,
//! `YYYY-MM-DD HH:MM:SS.ffffff+00:00`. Diesel reads them back by trying up to
//! a dozen `chrono` format strings in turn; a 100-task list parses 200 of
//! them, and a callgrind profile of the SQLite list (bench/README.md,
//! "Profile") put that at about a fifth of the service's instructions per
//! list. [`SqliteTs`] reads the stored format digit by digit and falls back
//! to diesel's parser for anything else (a value written by hand in another
//! of the formats SQLite's date functions accept, or a Julian day number),
//! so every value diesel accepts is still accepted, with the same result.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::sql_types::TimestamptzSqlite;
use diesel::sqlite::{Sqlite, SqliteType, SqliteValue};

/// A timestamp read from SQLite, with the fast path above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromSqlRow)]
pub(crate) struct SqliteTs(pub(crate) DateTime<Utc>);

impl From<SqliteTs> for DateTime<Utc> {
    fn from(ts: SqliteTs) -> Self {
        ts.0
    }
}

impl FromSql<TimestamptzSqlite, Sqlite> for SqliteTs {
    fn from_sql(mut value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        // Only a value stored as text is read as text: asking SQLite for the
        // text of a number would convert the value in place.
        if value.value_type() == Some(SqliteType::Text)
            && let Some(parsed) = parse_utc(value.read_text())
        {
            return Ok(Self(parsed));
        }
        <DateTime<Utc> as FromSql<TimestamptzSqlite, Sqlite>>::from_sql(value).map(Self)
    }
}

/// `YYYY-MM-DD HH:MM:SS`, a `T` allowed for the space, then an optional
/// fraction of 1 to 9 digits, then `+00:00`, `-00:00`, `Z` or nothing (UTC,
/// as diesel reads a value without an offset). `None` for anything else,
/// including other offsets and out-of-range fields: the caller then asks
/// diesel.
pub(crate) fn parse_utc(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let digits = |from: usize, to: usize| -> Option<u32> {
        b.get(from..to)?.iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if b.len() < 19 || separators.iter().any(|&(at, c)| b[at] != c) || !matches!(b[10], b' ' | b'T')
    {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(digits(0, 4)?).ok()?,
        digits(5, 7)?,
        digits(8, 10)?,
    )?;
    let mut rest = &b[19..];
    let mut nanos = 0;
    if let Some((b'.', fraction)) = rest.split_first() {
        let n = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits(20, 20 + n)? * 10u32.pow(9 - n as u32);
        rest = &fraction[n..];
    }
    if !matches!(rest, b"" | b"Z" | b"+00:00" | b"-00:00") {
        return None;
    }
    // `from_hms_nano_opt` rejects hours, minutes and seconds out of range
    // (a leap second, `:60`, goes to diesel).
    let time =
        NaiveTime::from_hms_nano_opt(digits(11, 13)?, digits(14, 16)?, digits(17, 19)?, nanos)?;
    Some(date.and_time(time).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone as _};

    /// What diesel writes (`ToSql<TimestamptzSqlite>` for `DateTime<Utc>`).
    const DIESEL_FORMAT: &str = "%F %T%.f%:z";

    fn diesel_reads(text: &str) -> Option<DateTime<Utc>> {
        const FORMATS: [&str; 3] = ["%F %T%.f%:z", "%FT%T%.f%:z", "%F %T%.fZ"];
        FORMATS.iter().find_map(|f| {
            DateTime::parse_from_str(text, f)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
    }

    #[test]
    fn reads_back_what_diesel_writes() {
        let start = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        let mut t = start;
        // Steps that hit whole seconds, milliseconds, microseconds and
        // nanoseconds (diesel's `%.f` writes 0, 3, 6 or 9 digits).
        for step in [
            Duration::seconds(86_399 * 53),
            Duration::milliseconds(1_234_567_891),
            Duration::microseconds(98_765_432_101),
            Duration::nanoseconds(7_654_321_987_654),
        ]
        .iter()
        .cycle()
        .take(4_000)
        {
            t += *step;
            let text = t.format(DIESEL_FORMAT).to_string();
            assert_eq!(parse_utc(&text), Some(t), "{text}");
            assert_eq!(diesel_reads(&text), Some(t), "{text}");
        }
        let now = tasks_domain::now();
        assert_eq!(parse_utc(&now.format(DIESEL_FORMAT).to_string()), Some(now));
    }

    #[test]
    fn accepts_the_utc_spellings_diesel_accepts() {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 17, 51, 36).unwrap()
            + Duration::microseconds(123_456);
        for text in [
            "2026-11-25 17:51:36.123456+00:00",
            "2026-11-25T17:51:36.123456Z",
            "2026-11-25 17:51:36.123456-00:00",
            "2026-11-25 17:51:36.123456",
            "2026-11-25 17:51:36.123456000+00:00",
        ] {
            assert_eq!(parse_utc(text), Some(t), "{text}");
        }
        assert_eq!(
            parse_utc("2026-11-25 17:51:36+00:00"),
            Some(Utc.with_ymd_and_hms(2026, 11, 25, 17, 51, 36).unwrap())
        );
    }

    #[test]
    fn leaves_everything_else_to_diesel() {
        for text in [
            "",
            "2026-11-25",
            "2026-11-25 17:51",
            "2026-11-25 17:51:36+01:00",
            "2026-11-25 17:51:36.+00:00",
            "2026-11-25 17:51:36.1234567890+00:00",
            "2026-13-25 17:51:36+00:00",
            "2026-02-30 17:51:36+00:00",
            "2026-11-25 24:00:00+00:00",
            "2026-11-25 23:60:00+00:00",
            "2026-11-25 23:59:60+00:00",
            "2026-11-25 17:51:36 +00:00",
            "2026/11/25 17:51:36+00:00",
            "2026-11-25 17:51:3x+00:00",
            "+026-11-25 17:51:36+00:00",
            "2461004.5",
            "2026-11-25 17:51:36+00:00garbage",
        ] {
            assert_eq!(parse_utc(text), None, "{text:?}");
        }
    }
}
