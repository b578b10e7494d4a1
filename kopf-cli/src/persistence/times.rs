//! Timestamps of progress records, parsed and formatted exactly as Kopf does.
//!
//! Kopf writes `datetime.isoformat(timespec='microseconds')` of a tz-aware UTC datetime
//! (`2026-11-21T23:59:12.501810+00:00`); records of Kopf < 1.37 are naive
//! (`2021-02-15T22:02:03.350703`). Kopf parses with `iso8601.parse_date(default_timezone=None)`,
//! which keeps naive values naive and keeps the original offsets; re-formatting a parsed
//! value therefore reproduces the same text for everything Kopf itself ever wrote.
//! For arithmetic and comparisons, naive values are taken as UTC (Kopf ≥ 1.40 would crash
//! comparing naive and aware datetimes; Kopf 1.37–1.39 assumed UTC).

use std::fmt;
use std::sync::LazyLock;

use jiff::civil::{DateTime, date, time};
use jiff::tz::Offset;
use regex::Regex;

/// Errors of timestamp parsing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeError {
    /// The text is not an ISO 8601 date-time as accepted by Python's `iso8601` package.
    #[error("unable to parse date string {0:?}")]
    Unparseable(String),
    /// The fields are out of range (month 13, hour 25, …).
    #[error("invalid date-time {0:?}: {1}")]
    OutOfRange(String, String),
}

/// A point in time with Python's distinction of naive (no offset) and aware (offset) values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    /// The wall-clock date-time (in the offset's local time for aware values).
    pub datetime: DateTime,
    /// The UTC offset; `None` for naive values (pre-1.37 Kopf).
    pub offset: Option<Offset>,
}

/// The regex of the `iso8601` package (which Kopf uses), verbatim except for the
/// `(?!$)` look-ahead, which is checked separately.
static ISO8601: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        ^(?P<year>[0-9]{4})
        (
            (
                (-(?P<monthdash>[0-9]{1,2}))
                |
                (?P<month>[0-9]{2})
            )
            (
                (
                    (-(?P<daydash>[0-9]{1,2}))
                    |
                    (?P<day>[0-9]{2})
                )
                (
                    (
                        (?P<separator>[\ T])
                        (?P<hour>[0-9]{2})
                        (:{0,1}(?P<minute>[0-9]{2})){0,1}
                        (
                            :{0,1}(?P<second>[0-9]{1,2})
                            ([.,](?P<second_fraction>[0-9]+)){0,1}
                        ){0,1}
                        (?P<timezone>
                            Z
                            |
                            (
                                (?P<tz_sign>[-+])
                                (?P<tz_hour>[0-9]{2})
                                :{0,1}
                                (?P<tz_minute>[0-9]{2}){0,1}
                            )
                        ){0,1}
                    ){0,1}
                )
            ){0,1}
        ){0,1}
        \n?\z",
    )
    .unwrap_or_else(|e| unreachable!("the static ISO 8601 regex is valid: {e}"))
});

impl Timestamp {
    /// An aware UTC timestamp from an instant.
    pub fn from_instant(instant: jiff::Timestamp) -> Self {
        Self {
            datetime: Offset::UTC.to_datetime(instant),
            offset: Some(Offset::UTC),
        }
    }

    /// The current time, aware, in UTC (what Kopf writes).
    pub fn now() -> Self {
        Self::from_instant(jiff::Timestamp::now())
    }

    /// The instant; naive values are taken as UTC.
    pub fn instant(&self) -> jiff::Timestamp {
        let offset = self.offset.unwrap_or(Offset::UTC);
        offset.to_timestamp(self.datetime).unwrap_or_else(|_| {
            // Only at the very edges of the supported range; clamp rather than fail.
            if self.datetime.year() < 0 {
                jiff::Timestamp::MIN
            } else {
                jiff::Timestamp::MAX
            }
        })
    }

    /// Whether the value has no offset (written by Kopf < 1.37).
    pub fn is_naive(&self) -> bool {
        self.offset.is_none()
    }

    /// This time plus some seconds (fractions to microseconds), keeping the offset kind.
    pub fn plus_seconds(&self, seconds: f64) -> Self {
        let micros = (seconds * 1e6).round();
        let micros = if micros.is_finite() { micros as i64 } else { 0 };
        let span = jiff::SignedDuration::from_micros(micros);
        let instant = self.instant().checked_add(span).unwrap_or(jiff::Timestamp::MAX);
        let offset = self.offset.unwrap_or(Offset::UTC);
        Self {
            datetime: offset.to_datetime(instant),
            offset: self.offset,
        }
    }

    /// Seconds from `self` to `later` (negative if `later` is earlier).
    pub fn seconds_until(&self, later: &Timestamp) -> f64 {
        later.instant().duration_since(self.instant()).as_secs_f64()
    }

    /// Parse as Python's `iso8601.parse_date(text, default_timezone=None)`.
    pub fn parse(text: &str) -> Result<Self, TimeError> {
        let bad = || TimeError::Unparseable(text.to_owned());
        let caps = ISO8601.captures(text).ok_or_else(bad)?;
        if let Some(m) = caps.name("month") {
            // The `(?!$)` look-ahead of the original regex: no `YYYYMM`.
            if text[m.end()..].trim_end_matches('\n').is_empty() {
                return Err(bad());
            }
        }
        let num = |name: &str, default: i64| -> i64 {
            caps.name(name)
                .and_then(|m| m.as_str().parse().ok())
                .unwrap_or(default)
        };
        let year = num("year", 0);
        let month = caps
            .name("month")
            .or(caps.name("monthdash"))
            .map_or(1, |m| m.as_str().parse().unwrap_or(0));
        let day = caps
            .name("day")
            .or(caps.name("daydash"))
            .map_or(1, |m| m.as_str().parse().unwrap_or(0));
        let (hour, minute, second) = (num("hour", 0), num("minute", 0), num("second", 0));
        // Python truncates the fraction to microseconds (int(Decimal("0.<digits>") * 10**6)).
        let micros = caps.name("second_fraction").map_or(0, |m| {
            let digits: String = m.as_str().chars().chain(std::iter::repeat('0')).take(6).collect();
            digits.parse::<i64>().unwrap_or(0)
        });
        let range = |what: &str| TimeError::OutOfRange(text.to_owned(), what.to_owned());
        if !(1..=9999).contains(&year) {
            return Err(range("year"));
        }
        let d = date(year as i16, 1, 1)
            .with()
            .month(i8::try_from(month).map_err(|_| range("month"))?)
            .day(i8::try_from(day).map_err(|_| range("day"))?)
            .build()
            .map_err(|e| range(&e.to_string()))?;
        if !(0..24).contains(&hour) || !(0..60).contains(&minute) || !(0..60).contains(&second) {
            return Err(range("time"));
        }
        let t = time(hour as i8, minute as i8, second as i8, (micros * 1000) as i32);
        let offset = match caps.name("timezone").map(|m| m.as_str()) {
            None => None,
            Some("Z") => Some(Offset::UTC),
            Some(_) => {
                let sign = if caps.name("tz_sign").is_some_and(|m| m.as_str() == "-") {
                    -1
                } else {
                    1
                };
                let secs = sign * (num("tz_hour", 0) * 3600 + num("tz_minute", 0) * 60);
                if secs.abs() >= 86400 {
                    return Err(range("offset"));
                }
                Some(Offset::from_seconds(secs as i32).map_err(|e| range(&e.to_string()))?)
            }
        };
        Ok(Self {
            datetime: DateTime::from_parts(d, t),
            offset,
        })
    }
}

impl fmt::Display for Timestamp {
    /// Python's `isoformat(timespec='microseconds')`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dt = &self.datetime;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.subsec_nanosecond() / 1000
        )?;
        if let Some(offset) = self.offset {
            let secs = offset.seconds();
            let sign = if secs < 0 { '-' } else { '+' };
            let abs = secs.unsigned_abs();
            write!(f, "{sign}{:02}:{:02}", abs / 3600, (abs % 3600) / 60)?;
            if abs % 60 != 0 {
                write!(f, ":{:02}", abs % 60)?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for text in [
            "2026-11-21T23:59:12.501810+00:00",
            "2021-02-15T22:02:03.350703",
            "2026-11-21T23:59:12.501810-05:30",
        ] {
            assert_eq!(Timestamp::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Timestamp::parse("2026-11-21T23:59:12Z").unwrap().to_string(),
            "2026-11-21T23:59:12.000000+00:00"
        );
        assert!(Timestamp::parse("202611").is_err());
    }

    #[test]
    fn arithmetic() {
        let t = Timestamp::parse("2026-11-21T23:59:12.501810+00:00").unwrap();
        let later = t.plus_seconds(30.0);
        assert_eq!(later.to_string(), "2026-11-21T23:59:42.501810+00:00");
        assert!((t.seconds_until(&later) - 30.0).abs() < 1e-9);
        let naive = Timestamp::parse("2026-11-21T23:59:12.501810").unwrap();
        assert_eq!(naive.instant(), t.instant());
    }
}
