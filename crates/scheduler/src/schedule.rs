//! When a job runs: [`Schedule`], its validation, and cron arithmetic on `time` types
//! (croner searches any type that implements its `CronDateTime`; `UtcTime` is ours).

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::{CivilDate, CivilDateTime, CivilTime, Cron, CronDateTime, Resolution};
use time::OffsetDateTime;

use crate::text;

/// When a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every period, counted from the start of the previous run (so a run that takes a
    /// while does not shift the next one); the first run comes one period after the
    /// scheduler starts, or at once with [`JobOptions::run_at_start`](crate::JobOptions).
    Every(Duration),
    /// A cron expression in UTC: 5 fields (`minute hour day-of-month month day-of-week`)
    /// or 6 (a `second` field first), names (`MON`, `JAN`), ranges, steps, `L`, `W`, `#`,
    /// and `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly`. As in Vixie cron, a day
    /// matches when day-of-month OR day-of-week does (when both are restricted).
    Cron(String),
}

/// Why a schedule was refused. The caller adds where it came from, e.g.
/// `scheduler.jobs.wal_checkpoint.cron: invalid cron expression "61 * * * *": …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// An interval of zero would run the job in a busy loop.
    #[error("interval must be longer than zero")]
    ZeroPeriod,
    /// The cron expression does not parse.
    #[error("invalid cron expression {expr:?}: {reason}")]
    InvalidCron {
        /// The expression as given.
        expr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The cron expression parses but matches no time (e.g. `0 0 30 2 *`, 30 February).
    #[error("cron expression {expr:?} never fires")]
    NeverFires {
        /// The expression as given.
        expr: String,
    },
}

impl Schedule {
    /// A cron schedule, checked now rather than at registration (for configuration
    /// validation at start-up).
    pub fn cron(expr: impl Into<String>) -> Result<Schedule, ScheduleError> {
        let schedule = Schedule::Cron(expr.into());
        schedule.plan()?;
        Ok(schedule)
    }

    /// Checks the schedule: a non-zero period, or a cron expression that parses and fires.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        self.plan().map(drop)
    }

    /// The first fire time strictly after `after`; `None` if there is none (a cron
    /// expression whose next match lies past the year 5000).
    ///
    /// For [`Schedule::Every`] this is `after + period`, which is where the scheduler
    /// puts the next run when a run starts at `after`.
    pub fn next_after(
        &self,
        after: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, ScheduleError> {
        Ok(self.plan()?.next_after(after))
    }

    /// Parses the schedule into the form the scheduler evaluates.
    pub(crate) fn plan(&self) -> Result<Plan, ScheduleError> {
        match self {
            Schedule::Every(period) if period.is_zero() => Err(ScheduleError::ZeroPeriod),
            Schedule::Every(period) => Ok(Plan::Every(*period)),
            Schedule::Cron(expr) => {
                let cron = parse_cron(expr)?;
                let plan = Plan::Cron(Box::new(cron));
                // A pattern that never matches would otherwise only show up as a job
                // with no next run; refuse it where the operator wrote it.
                match plan.next_after(OffsetDateTime::now_utc()) {
                    Some(_) => Ok(plan),
                    None => Err(ScheduleError::NeverFires {
                        expr: expr.trim().to_owned(),
                    }),
                }
            }
        }
    }
}

impl fmt::Display for Schedule {
    /// `every 5m` or `cron 0 3 * * *`: the text the status shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(period) => write!(f, "every {}", text::duration(*period)),
            Schedule::Cron(expr) => write!(f, "cron {}", expr.trim()),
        }
    }
}

/// The nicknames croner expands (`@annually` is `@yearly`).
const NICKNAMES: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

fn parse_cron(expr: &str) -> Result<Cron, ScheduleError> {
    let invalid = |reason: String| ScheduleError::InvalidCron {
        expr: expr.trim().to_owned(),
        reason,
    };
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(invalid("the expression is empty".to_owned()));
    }
    if trimmed.starts_with('@') {
        if !NICKNAMES.iter().any(|n| n.eq_ignore_ascii_case(trimmed)) {
            return Err(invalid(format!(
                "unknown nickname; use one of {}",
                NICKNAMES.join(", ")
            )));
        }
        return parser()
            .parse(trimmed)
            .map_err(|e| invalid(cron_reason(&e)));
    }
    // croner would also take a 7th (year) field; counting here gives a clearer message
    // than its own, and keeps the accepted forms to the two documented ones.
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    if !(5..=6).contains(&fields.len()) {
        return Err(invalid(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (a second \
             field first), found {}",
            fields.len()
        )));
    }
    parser()
        .parse(trimmed)
        .map_err(|e| invalid(locate_fault(&fields).unwrap_or_else(|| cron_reason(&e))))
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Names the first field croner refuses on its own (the others set to `*`), with what
/// that field allows: croner's own messages ("Number out of bounds.") do not say which.
fn locate_fault(fields: &[&str]) -> Option<String> {
    const FIVE: [(&str, &str); 5] = [
        ("minute", "0-59"),
        ("hour", "0-23"),
        ("day-of-month", "1-31, L, W"),
        ("month", "1-12 or JAN-DEC"),
        ("day-of-week", "0-7 or SUN-SAT, L, #"),
    ];
    let second = ("second", "0-59");
    let names: Vec<(&str, &str)> = if fields.len() == 6 {
        std::iter::once(second).chain(FIVE).collect()
    } else {
        FIVE.to_vec()
    };
    names.iter().enumerate().find_map(|(i, (name, allowed))| {
        let alone: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { fields[j] } else { "*" })
            .collect();
        let error = parser().parse(&alone.join(" ")).err()?;
        Some(format!(
            "{name} field {:?}: {} (allowed: {allowed})",
            fields[i],
            cron_reason(&error)
        ))
    })
}

/// croner's message, without the prefix that repeats the variant, in our tone
/// (lower case first letter, no final period).
fn cron_reason(e: &CronError) -> String {
    let raw = match e {
        CronError::EmptyPattern => "the expression is empty".to_owned(),
        CronError::InvalidPattern(m)
        | CronError::IllegalCharacters(m)
        | CronError::ComponentError(m) => m.clone(),
        other => other.to_string(),
    };
    let raw = raw.trim().trim_end_matches('.');
    let mut chars = raw.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "not a cron expression".to_owned(),
    }
}

/// A parsed schedule, evaluated by the scheduler's loop.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    Every(Duration),
    Cron(Box<Cron>),
}

impl Plan {
    /// The first fire time strictly after `after`.
    pub(crate) fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        match self {
            Plan::Every(period) => after.checked_add(time::Duration::try_from(*period).ok()?),
            Plan::Cron(cron) => {
                // Whole seconds: croner works in seconds, and "strictly after the second
                // that contains `after`" is strictly after `after` too.
                let start = after.replace_nanosecond(0).ok()?;
                cron.find_next_occurrence(&UtcTime(start), false)
                    .ok()
                    .map(|t| t.0)
            }
        }
    }
}

/// An instant in UTC, in the form croner searches over.
#[derive(Debug, Clone, Copy)]
struct UtcTime(OffsetDateTime);

impl CronDateTime for UtcTime {
    fn to_civil(&self) -> CivilDateTime {
        let t = self.0.to_offset(time::UtcOffset::UTC);
        // `time` keeps every part in range, so the unchecked constructors hold.
        CivilDateTime::new(
            CivilDate::from_parts_unchecked(t.year(), u8::from(t.month()).into(), t.day().into()),
            CivilTime::from_parts_unchecked(t.hour().into(), t.minute().into(), t.second().into()),
        )
    }

    fn civil_weekday(&self) -> croner::Weekday {
        let t = self.0.to_offset(time::UtcOffset::UTC);
        croner::Weekday::from_days_from_sunday(t.weekday().number_days_from_sunday().into())
    }

    fn resolve_civil(&self, civil: CivilDateTime) -> Result<Resolution<Self>, CronError> {
        let month = u8::try_from(civil.month())
            .ok()
            .and_then(|m| time::Month::try_from(m).ok())
            .ok_or(CronError::InvalidDate)?;
        let day = u8::try_from(civil.day()).map_err(|_| CronError::InvalidDate)?;
        let date = time::Date::from_calendar_date(civil.year(), month, day)
            .map_err(|_| CronError::InvalidDate)?;
        let hms = |v: u32| u8::try_from(v).map_err(|_| CronError::InvalidTime);
        let datetime = date
            .with_hms(
                hms(civil.hour())?,
                hms(civil.minute())?,
                hms(civil.second())?,
            )
            .map_err(|_| CronError::InvalidTime)?;
        // UTC has no daylight saving, so every wall-clock time is exactly one instant.
        Ok(Resolution::Single(UtcTime(datetime.assume_utc())))
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        self.0
            .checked_add(time::Duration::seconds(seconds))
            .map(UtcTime)
    }

    fn cmp_instant(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// (expression, after, expected next fire time): the cron arithmetic as data.
    #[test]
    fn cron_next_fire_times() {
        let cases = [
            (
                "*/15 * * * *",
                datetime!(2026-03-01 10:07:30 UTC),
                datetime!(2026-03-01 10:15:00 UTC),
            ),
            // Strictly after: a time that matches gives the following one.
            (
                "0 3 * * *",
                datetime!(2026-03-01 03:00:00 UTC),
                datetime!(2026-03-02 03:00:00 UTC),
            ),
            (
                "0 3 * * *",
                datetime!(2026-03-01 02:59:59.999 UTC),
                datetime!(2026-03-01 03:00:00 UTC),
            ),
            // Within the matching second, still strictly after.
            (
                "0 3 * * *",
                datetime!(2026-03-01 03:00:00.5 UTC),
                datetime!(2026-03-02 03:00:00 UTC),
            ),
            // Six fields: seconds first.
            (
                "30 */10 * * * *",
                datetime!(2026-03-01 10:00:31 UTC),
                datetime!(2026-03-01 10:10:30 UTC),
            ),
            (
                "*/5 * * * * *",
                datetime!(2026-03-01 10:00:01 UTC),
                datetime!(2026-03-01 10:00:05 UTC),
            ),
            // 2026-03-01 is a Sunday.
            (
                "0 0 * * MON",
                datetime!(2026-03-01 12:00:00 UTC),
                datetime!(2026-03-02 00:00:00 UTC),
            ),
            (
                "0 12 * * 1-5",
                datetime!(2026-03-06 13:00:00 UTC),
                datetime!(2026-03-09 12:00:00 UTC),
            ),
            (
                "0 0 * * 0",
                datetime!(2026-03-01 00:00:00 UTC),
                datetime!(2026-03-08 00:00:00 UTC),
            ),
            // Month and year roll over.
            (
                "0 0 1 * *",
                datetime!(2026-12-15 00:00:00 UTC),
                datetime!(2027-01-01 00:00:00 UTC),
            ),
            (
                "0 6 1 JAN *",
                datetime!(2026-03-01 00:00:00 UTC),
                datetime!(2027-01-01 06:00:00 UTC),
            ),
            // Leap day: the next one is in 2028.
            (
                "0 0 29 2 *",
                datetime!(2026-03-01 00:00:00 UTC),
                datetime!(2028-02-29 00:00:00 UTC),
            ),
            // Last day of the month.
            (
                "0 0 L * *",
                datetime!(2026-02-10 00:00:00 UTC),
                datetime!(2026-02-28 00:00:00 UTC),
            ),
            // Vixie cron: day-of-month OR day-of-week. 2026-03-06 is a Friday, before the 13th.
            (
                "0 0 13 * FRI",
                datetime!(2026-03-01 00:00:00 UTC),
                datetime!(2026-03-06 00:00:00 UTC),
            ),
            (
                "@hourly",
                datetime!(2026-03-01 10:59:59 UTC),
                datetime!(2026-03-01 11:00:00 UTC),
            ),
            (
                "@daily",
                datetime!(2026-03-01 10:00:00 UTC),
                datetime!(2026-03-02 00:00:00 UTC),
            ),
            // Lower case and surrounding spaces are fine.
            (
                "  0 0 * * sun  ",
                datetime!(2026-03-02 00:00:00 UTC),
                datetime!(2026-03-08 00:00:00 UTC),
            ),
            // Times given in another offset are the same instants: 03:30+01:00 is 02:30 UTC.
            (
                "0 3 * * *",
                datetime!(2026-03-01 03:30:00 +01:00),
                datetime!(2026-03-01 03:00:00 UTC),
            ),
        ];
        for (expr, after, want) in cases {
            let schedule = Schedule::cron(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            let next = schedule.next_after(after).expect("valid").expect("fires");
            assert_eq!(next, want, "{expr:?} after {after}");
        }
    }

    #[test]
    fn intervals_count_from_the_given_time() {
        let at = datetime!(2026-03-01 10:00:00 UTC);
        let every = Schedule::Every(Duration::from_secs(300));
        assert_eq!(
            every.next_after(at),
            Ok(Some(datetime!(2026-03-01 10:05:00 UTC)))
        );
        assert_eq!(every.to_string(), "every 5m");
    }

    /// (expression, the reason's key words): bad expressions, each refused with why.
    #[test]
    fn bad_cron_expressions_are_refused_with_a_reason() {
        let cases = [
            ("", "the expression is empty"),
            ("   ", "the expression is empty"),
            ("bogus", "found 1"),
            ("* * *", "expected 5 fields"),
            ("0 0 * * * * 2030", "found 7"),
            (
                "61 * * * *",
                "minute field \"61\": number out of bounds (allowed: 0-59)",
            ),
            ("* 24 * * *", "hour field \"24\""),
            ("* * 32 * *", "day-of-month field \"32\""),
            ("* * * 13 *", "month field \"13\""),
            ("* * * * 8", "day-of-week field \"8\""),
            ("60 * * * * *", "second field \"60\""),
            ("0 61 * * * *", "minute field \"61\""),
            ("*/0 * * * *", "minute field \"*/0\": step cannot be zero"),
            ("5-1 * * * *", "minute field \"5-1\""),
            ("a b c d e", "minute field \"a\""),
            ("0 0 * FOO *", "month field \"FOO\""),
            ("@reboot", "unknown nickname; use one of @yearly"),
        ];
        for (expr, words) in cases {
            match Schedule::cron(expr) {
                Err(ScheduleError::InvalidCron { expr: got, reason }) => {
                    assert_eq!(got, expr.trim());
                    assert!(!reason.is_empty(), "{expr:?}: empty reason");
                    assert!(reason.contains(words), "{expr:?}: {reason}");
                    let message = Schedule::cron(expr).expect_err("refused").to_string();
                    assert!(message.starts_with("invalid cron expression"), "{message}");
                }
                other => panic!("{expr:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn expressions_that_never_fire_are_refused() {
        for expr in ["0 0 30 2 *", "0 0 31 4 *"] {
            assert_eq!(
                Schedule::cron(expr),
                Err(ScheduleError::NeverFires {
                    expr: expr.to_owned()
                })
            );
        }
    }

    #[test]
    fn zero_interval_is_refused() {
        assert_eq!(
            Schedule::Every(Duration::ZERO).validate(),
            Err(ScheduleError::ZeroPeriod)
        );
        assert!(Schedule::Every(Duration::from_millis(1)).validate().is_ok());
    }

    #[test]
    fn display_is_the_configured_text() {
        assert_eq!(
            Schedule::Cron(" 0 3 * * * ".into()).to_string(),
            "cron 0 3 * * *"
        );
        assert_eq!(
            Schedule::Every(Duration::from_millis(1500)).to_string(),
            "every 1.5s"
        );
    }
}
