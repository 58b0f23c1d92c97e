//! Dunning: when an invoice declined softly (insufficient funds, try again later) is tried
//! again, and when it is given up on. Only declines count; transient errors (timeouts,
//! 5xx, 429) stay with the retry budget of one run.

use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};

use super::Settlement;

/// Offsets from an invoice's first soft decline at which it is tried again, in order:
/// `3d,5d,7d` tries it on the 3rd, 5th and 7th day after the first attempt and gives up
/// when the fourth attempt is declined too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DunningSchedule(Vec<TimeDelta>);

impl DunningSchedule {
    /// Most retries a schedule may hold.
    pub const MAX_RETRIES: usize = 20;
    /// The latest retry, counted from the first decline.
    pub const MAX_OFFSET: Duration = Duration::from_secs(366 * 86_400);

    /// A comma-separated list of increasing durations (`3d,5d,7d`, `90s`), or `none`
    /// (a soft decline gives up at once).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim() == "none" {
            return Ok(DunningSchedule(Vec::new()));
        }
        let mut offsets = Vec::new();
        for part in text.split(',').map(str::trim) {
            let offset = humantime::parse_duration(part)
                .map_err(|e| format!("{part:?}: {e} (expected durations such as 3d,5d,7d)"))?;
            if offset < Duration::from_secs(1) || offset > Self::MAX_OFFSET {
                return Err(format!(
                    "{part:?}: each retry must come 1s to 366d after the first"
                ));
            }
            let offset = TimeDelta::from_std(offset).map_err(|e| format!("{part:?}: {e}"))?;
            if offsets.last().is_some_and(|last| *last >= offset) {
                return Err(format!(
                    "{part:?}: each retry must come after the one before"
                ));
            }
            offsets.push(offset);
        }
        if offsets.len() > Self::MAX_RETRIES {
            return Err(format!("at most {} retries", Self::MAX_RETRIES));
        }
        Ok(DunningSchedule(offsets))
    }

    pub fn retries(&self) -> usize {
        self.0.len()
    }

    /// What a soft decline with `reason` does to an invoice declined `declines_before`
    /// times since `since` (its first decline; `None` for a first one), declined at `now`:
    /// past due until the schedule's next retry, or uncollectible once it has none left.
    pub fn settle_decline(
        &self,
        reason: String,
        declines_before: i32,
        since: Option<NaiveDateTime>,
        now: NaiveDateTime,
    ) -> Settlement {
        let attempt_count = declines_before.saturating_add(1);
        let since = since.unwrap_or(now);
        let retry = usize::try_from(declines_before)
            .ok()
            .and_then(|n| self.0.get(n));
        match retry {
            Some(offset) => Settlement::PastDue {
                reason,
                attempt_count,
                next_attempt_at: since + *offset,
                since,
            },
            None => Settlement::Uncollectible {
                reason,
                attempt_count,
            },
        }
    }
}

impl Default for DunningSchedule {
    /// Three retries, on the 3rd, 5th and 7th day after the first attempt.
    fn default() -> Self {
        DunningSchedule(vec![
            TimeDelta::days(3),
            TimeDelta::days(5),
            TimeDelta::days(7),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_796_083_200 + day * 86_400, 0)
            .expect("a time")
            .naive_utc()
    }

    #[test]
    fn the_default_retries_on_days_3_5_and_7_then_gives_up() {
        let schedule = DunningSchedule::parse("3d,5d,7d").expect("valid");
        assert_eq!(schedule, DunningSchedule::default());
        let decline = |before, since, now| {
            schedule.settle_decline("insufficient_funds".into(), before, since, now)
        };
        // The first decline starts the count; each retry is counted from it, not from the
        // retry before (a late retry does not push the next one back).
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for (before, day, next) in [(0, 0, 3), (1, 3, 5), (2, 6, 7)] {
            let since = (before > 0).then(|| at(0));
            got.push(decline(before, since, at(day)));
            expected.push(Settlement::PastDue {
                reason: "insufficient_funds".into(),
                attempt_count: before + 1,
                next_attempt_at: at(next),
                since: at(0),
            });
        }
        assert_eq!(got, expected);
        assert_eq!(
            decline(3, Some(at(0)), at(7)),
            Settlement::Uncollectible {
                reason: "insufficient_funds".into(),
                attempt_count: 4,
            }
        );
    }

    #[test]
    fn none_gives_up_at_the_first_decline() {
        let schedule = DunningSchedule::parse("none").expect("valid");
        assert_eq!(schedule.retries(), 0);
        assert!(matches!(
            schedule.settle_decline("try_again_later".into(), 0, None, at(0)),
            Settlement::Uncollectible {
                attempt_count: 1,
                ..
            }
        ));
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (text, says) in [
            ("", "expected durations"),
            ("3d,,7d", "expected durations"),
            ("three days", "expected durations"),
            ("5d,3d", "after the one before"),
            ("3d,3d", "after the one before"),
            ("0s", "1s to 366d"),
            ("400d", "1s to 366d"),
        ] {
            let why = DunningSchedule::parse(text).expect_err(text);
            assert!(why.contains(says), "{text:?}: {why}");
        }
        let many: Vec<String> = (1..=21).map(|d| format!("{d}d")).collect();
        assert!(
            DunningSchedule::parse(&many.join(","))
                .expect_err("too many")
                .contains("at most 20")
        );
        assert_eq!(
            DunningSchedule::parse(" 90s , 2h ")
                .expect("valid")
                .retries(),
            2
        );
    }
}
