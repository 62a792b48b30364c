//! Payout vocabulary (SPEC §4 "Payouts"): the period a statement covers (a calendar month, UTC),
//! a statement's status, and the moments a `payout_schedule` installment can wait for.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Days, Months, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// `open` (gathered again whenever its period is read) → `paid` (frozen, with a reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    Open,
    Paid,
}

impl PayoutStatus {
    pub const ALL: [PayoutStatus; 2] = [Self::Open, Self::Paid];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Paid => "paid",
        }
    }
}

names!(PayoutStatus);

/// When a `payout_schedule` installment becomes payable: when the deal is won (even while the
/// hold runs) or when the hold ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallmentAt {
    Won,
    HoldEnd,
}

impl InstallmentAt {
    pub const ALL: [InstallmentAt; 2] = [Self::Won, Self::HoldEnd];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Won => "won",
            Self::HoldEnd => "hold_end",
        }
    }
}

names!(InstallmentAt);

/// A calendar month in UTC, written `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    first_day: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a month written YYYY-MM, such as 2026-11")]
pub struct BadPeriod(pub String);

impl Period {
    /// The month `at` falls in.
    pub fn of(at: Millis) -> Period {
        let day = Utc
            .timestamp_millis_opt(at)
            .single()
            .map_or(NaiveDate::MIN, |t| t.date_naive());
        Period {
            first_day: day.with_day(1).unwrap_or(day),
        }
    }

    /// The first millisecond of the month.
    pub fn start(self) -> Millis {
        millis_of(self.first_day)
    }

    /// The first millisecond after the month.
    pub fn end(self) -> Millis {
        millis_of(self.next().first_day)
    }

    pub fn next(self) -> Period {
        Period {
            first_day: self
                .first_day
                .checked_add_months(Months::new(1))
                .unwrap_or(NaiveDate::MAX),
        }
    }

    /// The month's last day plus `days`, as `YYYY-MM-DD`: a statement's due date.
    pub fn due_date(self, days: u32) -> String {
        let last = self.next().first_day.pred_opt().unwrap_or(self.first_day);
        last.checked_add_days(Days::new(u64::from(days)))
            .unwrap_or(NaiveDate::MAX)
            .format("%Y-%m-%d")
            .to_string()
    }
}

fn millis_of(day: NaiveDate) -> Millis {
    day.and_hms_opt(0, 0, 0)
        .map_or(Millis::MAX, |t| t.and_utc().timestamp_millis())
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.first_day.format("%Y-%m"))
    }
}

impl FromStr for Period {
    type Err = BadPeriod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPeriod(s.to_string());
        let (year, month) = s.split_once('-').ok_or_else(bad)?;
        if year.len() != 4
            || month.len() != 2
            || !(year.chars().chain(month.chars())).all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        let first_day = NaiveDate::from_ymd_opt(
            year.parse().map_err(|_| bad())?,
            month.parse().map_err(|_| bad())?,
            1,
        )
        .ok_or_else(bad)?;
        Ok(Period { first_day })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_calendar_months_in_utc() {
        let nov: Period = "2026-11".parse().unwrap();
        assert_eq!(nov.to_string(), "2026-11");
        // 2026-11-01T00:00:00Z and 2026-12-01T00:00:00Z.
        assert_eq!(nov.start(), 1_793_491_200_000);
        assert_eq!(nov.end(), 1_796_083_200_000);
        assert_eq!(Period::of(nov.end() - 1), nov);
        assert_eq!(Period::of(nov.end()), "2026-12".parse().unwrap());
        assert_eq!(nov.next().next().to_string(), "2027-01");
        // Net-30 after 30 November; net-0 is the last day itself.
        assert_eq!(nov.due_date(30), "2026-12-30");
        assert_eq!(nov.due_date(0), "2026-11-30");
        assert_eq!(
            "2028-02".parse::<Period>().unwrap().due_date(1),
            "2028-03-01"
        );
        for bad in [
            "2026-13",
            "2026-1",
            "26-11",
            "2026/11",
            "2026-11-01",
            "",
            "abcd-ef",
        ] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_and_installments_round_trip_through_their_names() {
        for status in PayoutStatus::ALL {
            assert_eq!(status.as_str().parse::<PayoutStatus>().unwrap(), status);
        }
        assert!("void".parse::<PayoutStatus>().is_err());
        assert_eq!(
            serde_json::to_value(InstallmentAt::HoldEnd).unwrap(),
            "hold_end"
        );
        assert_eq!(
            serde_json::from_value::<InstallmentAt>(serde_json::json!("won")).unwrap(),
            InstallmentAt::Won
        );
    }
}
