//! Referrers, referrals (the write-once first touch of one referee, unique per normalised email)
//! and their touches (every attribution signal, including the ones that lost to the first touch).

use serde::Serialize;

use super::bulk::{self, Col, Param};
use super::tx::{on_tx, Tx};
use super::{qualified, Store, StoreError};
use crate::clock::Millis;

/// A stored referrer: what partner events announced, with its id and how far it got.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Referrer {
    pub id: String,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub facts: ReferrerFacts,
    pub status: String,
    pub invited_at: Option<i64>,
    pub joined_at: Option<i64>,
}

/// A referrer as announced by a product event.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct ReferrerFacts {
    pub code: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub company_domain: Option<String>,
    pub market: Option<String>,
    pub kind: String,
}

/// A stored referral: its write-once first touch, with what the referee's later events and its
/// deals filled in since.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Referral {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub first_touch: NewReferral,
    pub referee_name: Option<String>,
    pub referee_company: Option<String>,
    pub utm: String,
    pub signup_ip: Option<String>,
    pub signed_up_at: Option<i64>,
    pub activated_at: Option<i64>,
    pub qualified_at: Option<i64>,
    pub won_at: Option<i64>,
}

/// Facts a claim (referral.created / signup.created) carries besides the attribution.
#[derive(Debug, Clone, Default)]
pub struct RefereeDetails {
    pub name: Option<String>,
    pub company: Option<String>,
    pub utm: Option<String>,
    pub ip: Option<String>,
    pub signed_up_at: Option<Millis>,
}

/// Who referred, how and where: the attribution a touch claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Attribution {
    pub referrer_code: Option<String>,
    pub source: Option<String>,
    pub market: Option<String>,
    pub first_touch_at: Millis,
}

impl Referral {
    pub fn id(&self) -> &str {
        &self.first_touch.id
    }

    pub fn email(&self) -> &str {
        &self.first_touch.email
    }

    pub fn attribution(&self) -> &Attribution {
        &self.first_touch.attribution
    }
}

/// A recorded touch: the touch as recorded, with its id and when it was recorded.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Touch {
    pub id: i64,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub touch: NewTouch,
    pub recorded_at: i64,
}

/// A referrer change from one or more partner events, merged in event order.
#[derive(Debug, Clone, Serialize)]
pub struct ReferrerUpsert {
    pub id: String,
    #[serde(flatten)]
    pub facts: ReferrerFacts,
    pub joined: bool,
    pub invited_at: Option<Millis>,
    pub joined_at: Option<Millis>,
}

impl ReferrerUpsert {
    pub fn new(facts: ReferrerFacts, joined: bool, at: Millis) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            facts,
            joined,
            invited_at: (!joined).then_some(at),
            joined_at: joined.then_some(at),
        }
    }

    /// What a later event for the same code adds, with the rules of [`Tx::upsert_referrers`].
    pub fn absorb(&mut self, later: ReferrerUpsert) {
        let (facts, later_facts) = (&mut self.facts, later.facts);
        facts.name = later_facts.name.or(facts.name.take());
        facts.email = later_facts.email.or(facts.email.take());
        facts.company_domain = later_facts.company_domain.or(facts.company_domain.take());
        facts.market = later_facts.market.or(facts.market.take());
        facts.kind = later_facts.kind;
        self.joined |= later.joined;
        self.invited_at = self.invited_at.or(later.invited_at);
        self.joined_at = self.joined_at.or(later.joined_at);
    }
}

/// A new referral: the first touch of one referee (the id is made by the writer, so a batch can
/// link touches to it before it is stored).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NewReferral {
    pub id: String,
    pub email: String,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub attribution: Attribution,
}

/// Referee details and the activation milestone for an existing referral; each field fills an
/// empty one, never replaces a known one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RefereeFill {
    pub id: String,
    pub name: Option<String>,
    pub company: Option<String>,
    pub utm: Option<String>,
    pub ip: Option<String>,
    pub signed_up_at: Option<Millis>,
    pub activated_at: Option<Millis>,
}

impl RefereeFill {
    /// Later fills only add what earlier ones left empty (first known value wins).
    pub fn absorb(&mut self, later: RefereeFill) {
        self.name = self.name.take().or(later.name);
        self.company = self.company.take().or(later.company);
        self.utm = self.utm.take().or(later.utm);
        self.ip = self.ip.take().or(later.ip);
        self.signed_up_at = self.signed_up_at.or(later.signed_up_at);
        self.activated_at = self.activated_at.or(later.activated_at);
    }
}

/// A touch to record.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NewTouch {
    pub referral_id: String,
    pub inbox_event_id: Option<i64>,
    pub kind: String,
    pub referrer_code: Option<String>,
    pub source: Option<String>,
    pub market: Option<String>,
    pub occurred_at: Millis,
    pub outcome: String,
}

/// A referral's milestones as the reconcile step derives them from its linked deals' stages.
#[derive(Debug, Clone, Serialize)]
pub struct MilestoneFill {
    pub id: String,
    pub qualified_at: Option<Millis>,
    pub won_at: Option<Millis>,
}

pub(super) const REFERRER_COLUMNS: &str =
    "id, code, name, email, company_domain, market, kind, status, invited_at, joined_at";
pub(super) const REFERRAL_COLUMNS: &str =
    "id, email, referee_name, referee_company, referrer_code, source, \
     market, first_touch_at, utm, signup_ip, signed_up_at, activated_at, qualified_at, won_at";
pub(super) const TOUCH_COLUMNS: &str =
    "id, referral_id, inbox_event_id, kind, referrer_code, source, market, \
     occurred_at, outcome, recorded_at";

impl Tx {
    /// Create or complete referrers, one statement for all. Known facts are kept unless an event
    /// brings new ones; `joined` never goes back to `invited`.
    pub async fn upsert_referrers(
        &mut self,
        referrers: &[ReferrerUpsert],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "INSERT INTO referrers (id, code, name, email, company_domain, market, kind, status, \
                 invited_at, joined_at, created_at, updated_at) \
             SELECT r.id, r.code, r.name, r.email, r.company_domain, r.market, r.kind, \
                 CASE WHEN r.joined THEN 'joined' ELSE 'invited' END, r.invited_at, r.joined_at, \
                 $2, $2 FROM {rows} WHERE true \
             ON CONFLICT (code) DO UPDATE SET \
                 name = COALESCE(excluded.name, referrers.name), \
                 email = COALESCE(excluded.email, referrers.email), \
                 company_domain = COALESCE(excluded.company_domain, referrers.company_domain), \
                 market = COALESCE(excluded.market, referrers.market), \
                 kind = excluded.kind, \
                 status = CASE WHEN referrers.status = 'joined' THEN 'joined' ELSE excluded.status END, \
                 invited_at = COALESCE(referrers.invited_at, excluded.invited_at), \
                 joined_at = COALESCE(referrers.joined_at, excluded.joined_at), \
                 updated_at = excluded.updated_at",
            &[
                ("id", Col::Text),
                ("code", Col::Text),
                ("name", Col::Text),
                ("email", Col::Text),
                ("company_domain", Col::Text),
                ("market", Col::Text),
                ("kind", Col::Text),
                ("joined", Col::Bool),
                ("invited_at", Col::BigInt),
                ("joined_at", Col::BigInt),
            ],
            referrers,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }

    /// Create or complete one referrer (partner import).
    pub async fn upsert_referrer(
        &mut self,
        facts: &ReferrerFacts,
        joined: bool,
        at: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.upsert_referrers(&[ReferrerUpsert::new(facts.clone(), joined, at)], now)
            .await
    }

    /// Record first touches. An email that already has one keeps it (the unique email wins), so
    /// a first touch is write-once; returns how many were new.
    pub async fn insert_referrals(
        &mut self,
        referrals: &[NewReferral],
        now: Millis,
    ) -> Result<u64, StoreError> {
        self.bulk_execute(
            "INSERT INTO referrals (id, email, referrer_code, source, market, first_touch_at, \
                 created_at, updated_at) \
             SELECT r.id, r.email, r.referrer_code, r.source, r.market, r.first_touch_at, $2, $2 \
             FROM {rows} WHERE true ON CONFLICT (email) DO NOTHING",
            &[
                ("id", Col::Text),
                ("email", Col::Text),
                ("referrer_code", Col::Text),
                ("source", Col::Text),
                ("market", Col::Text),
                ("first_touch_at", Col::BigInt),
            ],
            referrals,
            &[Param::Int(now)],
        )
        .await
    }

    /// Record the first touch for `email`. If one exists already, that one is returned unchanged.
    pub async fn insert_referral(
        &mut self,
        email: &str,
        attribution: &Attribution,
        now: Millis,
    ) -> Result<(Referral, bool), StoreError> {
        let new = NewReferral {
            id: uuid::Uuid::now_v7().to_string(),
            email: email.to_string(),
            attribution: attribution.clone(),
        };
        let inserted = self.insert_referrals(&[new], now).await?;
        let referral = self
            .referrals_by_emails(&[email])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Corrupt(format!("referral for {email} vanished")))?;
        Ok((referral, inserted == 1))
    }

    /// Fill referee details and activation times that are still empty; never touches the
    /// attribution.
    pub async fn fill_referees(
        &mut self,
        fills: &[RefereeFill],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "UPDATE referrals SET \
                 referee_name = COALESCE(referrals.referee_name, r.name), \
                 referee_company = COALESCE(referrals.referee_company, r.company), \
                 utm = CASE WHEN referrals.utm = '{}' AND r.utm IS NOT NULL THEN r.utm \
                     ELSE referrals.utm END, \
                 signup_ip = COALESCE(referrals.signup_ip, r.ip), \
                 signed_up_at = COALESCE(referrals.signed_up_at, r.signed_up_at), \
                 activated_at = COALESCE(referrals.activated_at, r.activated_at), \
                 updated_at = $2 \
             FROM {rows} WHERE referrals.id = r.id",
            &[
                ("id", Col::Text),
                ("name", Col::Text),
                ("company", Col::Text),
                ("utm", Col::Text),
                ("ip", Col::Text),
                ("signed_up_at", Col::BigInt),
                ("activated_at", Col::BigInt),
            ],
            fills,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }

    /// Set qualified/won milestones that are still empty.
    pub async fn set_milestones(
        &mut self,
        fills: &[MilestoneFill],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "UPDATE referrals SET qualified_at = r.qualified_at, won_at = r.won_at, \
                 updated_at = $2 \
             FROM {rows} WHERE referrals.id = r.id",
            &[
                ("id", Col::Text),
                ("qualified_at", Col::BigInt),
                ("won_at", Col::BigInt),
            ],
            fills,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }

    pub async fn insert_touches(
        &mut self,
        touches: &[NewTouch],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.bulk_execute(
            "INSERT INTO touches (referral_id, inbox_event_id, kind, referrer_code, source, \
                 market, occurred_at, outcome, recorded_at) \
             SELECT r.referral_id, r.inbox_event_id, r.kind, r.referrer_code, r.source, r.market, \
                 r.occurred_at, r.outcome, $2 FROM {rows} WHERE true \
             ON CONFLICT (referral_id, inbox_event_id) DO NOTHING",
            &[
                ("referral_id", Col::Text),
                ("inbox_event_id", Col::BigInt),
                ("kind", Col::Text),
                ("referrer_code", Col::Text),
                ("source", Col::Text),
                ("market", Col::Text),
                ("occurred_at", Col::BigInt),
                ("outcome", Col::Text),
            ],
            touches,
            &[Param::Int(now)],
        )
        .await?;
        Ok(())
    }

    /// Replace the attribution (admin override only; the caller audits it).
    pub async fn set_attribution(
        &mut self,
        referral_id: &str,
        a: &Attribution,
        now: Millis,
    ) -> Result<(), StoreError> {
        on_tx!(self, |c| {
            sqlx::query(
                "UPDATE referrals SET referrer_code = $2, source = $3, market = $4, updated_at = $5 \
                 WHERE id = $1",
            )
            .bind(referral_id)
            .bind(&a.referrer_code)
            .bind(&a.source)
            .bind(&a.market)
            .bind(now)
            .execute(c)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    // ---- reads ---------------------------------------------------------------------------------

    pub async fn referrer(&mut self, code: &str) -> Result<Option<Referrer>, StoreError> {
        Ok(self.referrers_by_codes(&[code]).await?.into_iter().next())
    }

    pub async fn referrers_by_codes(
        &mut self,
        codes: &[&str],
    ) -> Result<Vec<Referrer>, StoreError> {
        self.bulk_fetch(
            &format!(
                "SELECT {} FROM {{rows}} JOIN referrers x ON x.code = r.v",
                qualified(REFERRER_COLUMNS, "x")
            ),
            &bulk::LIST,
            &bulk::list(codes),
            &[],
        )
        .await
    }

    pub async fn referral(&mut self, id: &str) -> Result<Option<Referral>, StoreError> {
        Ok(self.referrals_by_ids(&[id]).await?.into_iter().next())
    }

    pub async fn referrals_by_ids(&mut self, ids: &[&str]) -> Result<Vec<Referral>, StoreError> {
        self.referrals_by("id", ids).await
    }

    pub async fn referrals_by_emails(
        &mut self,
        emails: &[&str],
    ) -> Result<Vec<Referral>, StoreError> {
        self.referrals_by("email", emails).await
    }

    async fn referrals_by(
        &mut self,
        column: &'static str,
        values: &[&str],
    ) -> Result<Vec<Referral>, StoreError> {
        self.bulk_fetch(
            &format!(
                "SELECT {} FROM {{rows}} JOIN referrals f ON f.{column} = r.v",
                qualified(REFERRAL_COLUMNS, "f")
            ),
            &bulk::LIST,
            &bulk::list(values),
            &[],
        )
        .await
    }

    /// Number of referrals of `code` that reached won (successful referrals).
    pub async fn successful_referrals(&mut self, code: &str) -> Result<i64, StoreError> {
        Ok(self
            .successful_referrals_of(&[code])
            .await?
            .first()
            .map_or(0, |(_, n)| *n))
    }

    /// Successful referrals per referrer code (codes without one are left out).
    pub async fn successful_referrals_of(
        &mut self,
        codes: &[&str],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.bulk_fetch(
            "SELECT f.referrer_code, COUNT(*) FROM {rows} JOIN referrals f \
             ON f.referrer_code = r.v WHERE f.won_at IS NOT NULL GROUP BY f.referrer_code",
            &bulk::LIST,
            &bulk::list(codes),
            &[],
        )
        .await
    }
}

/// Read-only views for the admin API, reports and tests.
impl Store {
    pub async fn referral_by_email(&self, email: &str) -> Result<Option<Referral>, StoreError> {
        let sql = format!("SELECT {REFERRAL_COLUMNS} FROM referrals WHERE email = $1");
        self.fetch_optional_by(&sql, email).await
    }

    pub async fn referrer_by_code(&self, code: &str) -> Result<Option<Referrer>, StoreError> {
        let sql = format!("SELECT {REFERRER_COLUMNS} FROM referrers WHERE code = $1");
        self.fetch_optional_by(&sql, code).await
    }

    pub async fn touches(&self, referral_id: &str) -> Result<Vec<Touch>, StoreError> {
        let sql = format!("SELECT {TOUCH_COLUMNS} FROM touches WHERE referral_id = $1 ORDER BY id");
        self.fetch_all_by(&sql, referral_id).await
    }
}
