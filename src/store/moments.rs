//! Advocacy moments (SPEC §4): every moment a customer may be glad to be asked for a referral
//! (`advocacy_moments`, written by the facts step for product events and by the reconcile step
//! for renewal wins), what the reconcile step decided about each, and the asks it made
//! (`referral_asks`), which reports follow up: did a referral follow within 30 days?

use serde::Serialize;

use super::bulk::{self, Col, Param};
use super::{count, Store, StoreError, Tx};
use crate::clock::{Millis, DAY};
use crate::domain::moment::{MomentKind, MomentOutcome};

/// A moment to record; a second one with the same `key` is the same moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewMoment {
    /// `event:<inbox id>` for a product event, `renewal:<crm>:<deal id>:<email>` for a renewal.
    pub key: String,
    pub email: String,
    pub kind: String,
    pub occurred_at: Millis,
    pub score: Option<i64>,
    pub milestone: Option<String>,
}

impl NewMoment {
    pub fn new(key: String, email: &str, kind: MomentKind, occurred_at: Millis) -> Self {
        Self {
            key,
            email: email.to_string(),
            kind: kind.as_str().to_string(),
            occurred_at,
            score: None,
            milestone: None,
        }
    }
}

/// A recorded moment.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Moment {
    pub id: i64,
    pub email: String,
    pub kind: String,
    pub occurred_at: i64,
    pub score: Option<i64>,
    pub milestone: Option<String>,
    pub status: String,
    pub reason: Option<String>,
}

impl Moment {
    pub fn kind(&self) -> Result<MomentKind, StoreError> {
        self.kind
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("moment {} kind `{}`", self.id, self.kind)))
    }

    pub fn outcome(&self) -> Result<MomentOutcome, StoreError> {
        self.status.parse().map_err(|_| {
            StoreError::Corrupt(format!("moment {} status `{}`", self.id, self.status))
        })
    }
}

/// What the reconcile step decided about a moment.
#[derive(Debug, Clone, Serialize)]
pub struct MomentDecision {
    pub id: i64,
    pub status: String,
    pub reason: Option<String>,
}

/// A referral ask made at a moment.
#[derive(Debug, Clone, Serialize)]
pub struct NewAsk {
    pub moment_id: i64,
    pub email: String,
    pub kind: String,
    pub asked_at: Millis,
}

/// A referral of someone (by email) that is still open: not won, no linked deal lost.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OpenReferral {
    /// The referrer's email.
    pub email: String,
    pub market: Option<String>,
    pub first_touch_at: i64,
}

/// Asks of one kind in a period, and how many a referral by the person asked followed within
/// 30 days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskOutcome {
    pub kind: MomentKind,
    pub asks: u64,
    pub led_to_referral: u64,
}

/// How long after an ask a referral by the person asked counts as its result.
pub const ASK_FOLLOW_UP: Millis = 30 * DAY;

const MOMENT_COLUMNS: &str = "id, email, kind, occurred_at, score, milestone, status, reason";

impl Tx {
    /// Record moments; one already recorded (same key) is left as it is.
    pub async fn insert_moments(
        &mut self,
        moments: &[NewMoment],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "INSERT INTO advocacy_moments (key, email, kind, occurred_at, score, milestone, \
                 recorded_at) \
             SELECT r.key, r.email, r.kind, r.occurred_at, r.score, r.milestone, $2 \
             FROM {rows} WHERE true ON CONFLICT (key) DO NOTHING",
            &[
                ("key", Col::Text),
                ("email", Col::Text),
                ("kind", Col::Text),
                ("occurred_at", Col::BigInt),
                ("score", Col::BigInt),
                ("milestone", Col::Text),
            ],
            moments,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }

    /// Every moment of these people, in time order (decided ones too: the cooldown and the
    /// latest NPS score look at them).
    pub async fn moments_of(&mut self, emails: &[&str]) -> Result<Vec<Moment>, StoreError> {
        self.bulk_fetch(
            &format!(
                "SELECT m.{} FROM {{rows}} JOIN advocacy_moments m ON m.email = r.v \
                 ORDER BY m.email, m.occurred_at, m.id",
                MOMENT_COLUMNS.replace(", ", ", m.")
            ),
            &bulk::LIST,
            &bulk::list(emails),
            &[],
        )
        .await
    }

    /// When these people were last asked: every ask, by email.
    pub async fn asks_of(&mut self, emails: &[&str]) -> Result<Vec<(String, i64)>, StoreError> {
        self.bulk_fetch(
            "SELECT a.email, a.asked_at FROM {rows} JOIN referral_asks a ON a.email = r.v \
             ORDER BY a.email, a.asked_at",
            &bulk::LIST,
            &bulk::list(emails),
            &[],
        )
        .await
    }

    /// The open referrals of referrers with these emails.
    pub async fn open_referrals_of(
        &mut self,
        emails: &[&str],
    ) -> Result<Vec<OpenReferral>, StoreError> {
        self.bulk_fetch(
            "SELECT p.email, x.market, x.first_touch_at \
             FROM {rows} JOIN referrers p ON p.email = r.v \
             JOIN referrals x ON x.referrer_code = p.code \
             WHERE x.won_at IS NULL AND NOT EXISTS (SELECT 1 FROM crm_records d \
                 WHERE d.referral_id = x.id AND d.stage = 'lost') \
             ORDER BY p.email, x.first_touch_at",
            &bulk::LIST,
            &bulk::list(emails),
            &[],
        )
        .await
    }

    pub async fn decide_moments(
        &mut self,
        decisions: &[MomentDecision],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "UPDATE advocacy_moments SET status = r.status, reason = r.reason, decided_at = $2 \
             FROM {rows} WHERE advocacy_moments.id = r.id",
            &[
                ("id", Col::BigInt),
                ("status", Col::Text),
                ("reason", Col::Text),
            ],
            decisions,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }

    pub async fn insert_asks(&mut self, asks: &[NewAsk], now: Millis) -> Result<(), StoreError> {
        self.bulk_execute(
            "INSERT INTO referral_asks (moment_id, email, kind, asked_at, created_at) \
             SELECT r.moment_id, r.email, r.kind, r.asked_at, $2 FROM {rows} WHERE true \
             ON CONFLICT (moment_id) DO NOTHING",
            &[
                ("moment_id", Col::BigInt),
                ("email", Col::Text),
                ("kind", Col::Text),
                ("asked_at", Col::BigInt),
            ],
            asks,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }

    /// The people of these deals of one CRM (their live associations) who have an email.
    pub async fn people_of_deals_with_email(
        &mut self,
        crm: &str,
        deal_ids: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError> {
        #[derive(Serialize)]
        struct Deal<'a> {
            crm: &'a str,
            id: &'a str,
        }
        let rows: Vec<Deal> = deal_ids.iter().map(|id| Deal { crm, id }).collect();
        self.bulk_fetch(
            "SELECT a.deal_id, c.email FROM {rows} \
             JOIN crm_associations a ON a.crm = r.crm AND a.deal_id = r.id \
             JOIN crm_records c ON c.crm = a.crm AND c.object_id = a.contact_id \
             WHERE a.removed = FALSE AND c.email IS NOT NULL \
                 AND c.object_type IN ('contact', 'Contact', 'Lead') \
             ORDER BY a.deal_id, c.email",
            &[("crm", Col::Text), ("id", Col::Text)],
            &rows,
            &[],
        )
        .await
    }
}

impl Store {
    /// A person's moments, oldest first (admin API, tests).
    pub async fn moments_of(&self, email: &str) -> Result<Vec<Moment>, StoreError> {
        let sql = format!(
            "SELECT {MOMENT_COLUMNS} FROM advocacy_moments WHERE email = $1 \
             ORDER BY occurred_at, id"
        );
        self.fetch_all_by(&sql, email).await
    }
}

/// Asks made in `[$1, $2)` per moment kind, and how many a referral by the person asked
/// followed within `$3` (a referral whose referrer has the asked email).
pub(super) const ASK_OUTCOMES_SQL: &str = "SELECT a.kind, COUNT(*), \
         COUNT(CASE WHEN EXISTS (SELECT 1 FROM referrers p \
             JOIN referrals x ON x.referrer_code = p.code \
             WHERE p.email = a.email AND x.first_touch_at >= a.asked_at \
               AND x.first_touch_at < a.asked_at + $3) THEN 1 END) \
     FROM referral_asks a \
     WHERE ($1 IS NULL OR a.asked_at >= $1) AND ($2 IS NULL OR a.asked_at < $2) \
     GROUP BY a.kind ORDER BY a.kind";

/// The rows of [`ASK_OUTCOMES_SQL`].
pub(super) fn ask_outcomes(rows: Vec<(String, i64, i64)>) -> Result<Vec<AskOutcome>, StoreError> {
    rows.into_iter()
        .map(|(kind, asks, led)| {
            Ok(AskOutcome {
                kind: kind
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("referral ask kind `{kind}`")))?,
                asks: count(asks)?,
                led_to_referral: count(led)?,
            })
        })
        .collect()
}
