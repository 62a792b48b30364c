//! Advocacy moments, decided (SPEC §4): which recorded moments mark a customer's CRM contacts as
//! a good moment to ask for a referral. Part of the reconcile step, so each person's moments are
//! decided by one writer, in time order, against everything recorded so far.
//!
//! The rules, on each moment not decided yet (all of them stated on stored state):
//! - its kind is in `[moments] kinds` (and `[moments] enabled`);
//! - an NPS score is at least `nps_min`; and the person's latest NPS score at the moment's time
//!   is above 6, whatever the moment (a detractor is never asked);
//! - the person was not asked within `cooldown_days` of the moment, before or after it;
//! - the person is not a referrer with an open referral: not won, no linked deal lost, still
//!   within its program's attribution window at the moment's time;
//! - a HubSpot contact or Salesforce Contact has the person's email.
//!
//! A renewal or expansion deal (`[renewals]`) that is won is a moment for each of its people.

use std::collections::{BTreeMap, BTreeSet};

use crate::attribution::writeback;
use crate::clock::{Millis, DAY};
use crate::config::Settings;
use crate::domain::moment::{MomentKind, MomentOutcome};
use crate::domain::stage::CanonicalStage;
use crate::domain::Crm;
use crate::store::{
    CrmRecord, Moment, MomentDecision, NewAsk, NewMoment, NewOutbox, OpenReferral, RecordKey,
    StoreError, Tx,
};

/// The NPS score at or below which a person is never asked (a detractor).
const DETRACTOR_MAX: i64 = 6;

/// Record the moments of the won renewals among `won`, decide every undecided moment of
/// `emails` and of those renewals' people, and return the CRM writes of the asks made.
pub(super) async fn settle(
    tx: &mut Tx,
    settings: &Settings,
    mut emails: BTreeSet<String>,
    won: &BTreeSet<RecordKey>,
    now: Millis,
) -> Result<Vec<NewOutbox>, StoreError> {
    if settings.renewal_moments() && !won.is_empty() {
        let keys: Vec<RecordKey> = won.iter().cloned().collect();
        let renewals: Vec<CrmRecord> = tx
            .records(&keys)
            .await?
            .into_iter()
            .filter(|d| {
                d.stage.as_deref() == Some(CanonicalStage::Won.as_str())
                    && d.deleted_at.is_none()
                    && d.merged_into.is_none()
                    && settings.renewals.is_renewal(d)
            })
            .collect();
        let mut moments = Vec::new();
        for crm in Crm::ALL {
            let of_crm: Vec<&CrmRecord> = renewals.iter().filter(|d| d.crm == crm).collect();
            let ids: Vec<&str> = of_crm.iter().map(|d| d.object_id.as_str()).collect();
            if ids.is_empty() {
                continue;
            }
            for (deal_id, email) in tx.people_of_deals_with_email(crm.as_str(), &ids).await? {
                let Some(deal) = of_crm.iter().find(|d| d.object_id == deal_id) else {
                    continue;
                };
                let Some(at) = deal.won_at.or(deal.stage_occurred_at) else {
                    continue;
                };
                let key = format!("renewal:{}:{deal_id}:{email}", crm.as_str());
                moments.push(NewMoment::new(key, &email, MomentKind::Renewal, at));
                emails.insert(email);
            }
        }
        tx.insert_moments(&moments, now).await?;
    }
    if emails.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<&str> = emails.iter().map(String::as_str).collect();
    let moments = tx.moments_of(&list).await?;
    let mut pending = false;
    for m in &moments {
        pending |= m.outcome()? == MomentOutcome::Pending;
    }
    if !pending {
        return Ok(Vec::new());
    }
    let mut asked: BTreeMap<String, Vec<Millis>> = BTreeMap::new();
    for (email, at) in tx.asks_of(&list).await? {
        asked.entry(email).or_default().push(at);
    }
    let mut open: BTreeMap<String, Vec<OpenReferral>> = BTreeMap::new();
    for o in tx.open_referrals_of(&list).await? {
        open.entry(o.email.clone()).or_default().push(o);
    }
    let mut contacts: BTreeMap<String, Vec<CrmRecord>> = BTreeMap::new();
    for c in tx.people_with_emails(&list).await? {
        // The fields live on HubSpot contacts and Salesforce Contacts (not Leads).
        if matches!(c.object_type.as_str(), "contact" | "Contact") {
            if let Some(email) = c.email.clone() {
                contacts.entry(email).or_default().push(c);
            }
        }
    }

    let mut decisions = Vec::new();
    let mut asks = Vec::new();
    let mut writes = Vec::new();
    for m in &moments {
        if m.outcome()? != MomentOutcome::Pending {
            continue;
        }
        let kind = m.kind()?;
        let person = Person {
            moments: moments.iter().filter(|x| x.email == m.email).collect(),
            asked: asked.get(&m.email).map(Vec::as_slice).unwrap_or_default(),
            open: open.get(&m.email).map(Vec::as_slice).unwrap_or_default(),
            has_contact: contacts.contains_key(&m.email),
        };
        let decision = decide(settings, m, kind, &person)?;
        decisions.push(MomentDecision {
            id: m.id,
            status: match decision {
                Ok(()) => MomentOutcome::Asked,
                Err(_) => MomentOutcome::Skipped,
            }
            .as_str()
            .to_string(),
            reason: decision.clone().err(),
        });
        if decision.is_ok() {
            asked
                .entry(m.email.clone())
                .or_default()
                .push(m.occurred_at);
            asks.push(NewAsk {
                moment_id: m.id,
                email: m.email.clone(),
                kind: kind.as_str().to_string(),
                asked_at: m.occurred_at,
            });
            for contact in contacts.get(&m.email).into_iter().flatten() {
                writes.push(writeback::ask_write(settings, contact, kind, m.occurred_at));
            }
        }
    }
    tx.decide_moments(&decisions, now).await?;
    tx.insert_asks(&asks, now).await?;
    Ok(writes)
}

/// What the rules consult about one person.
struct Person<'a> {
    /// Every moment of the person, in time order.
    moments: Vec<&'a Moment>,
    /// When the person was asked.
    asked: &'a [Millis],
    open: &'a [OpenReferral],
    has_contact: bool,
}

/// `Ok` to ask at moment `m`, or why not.
fn decide(
    settings: &Settings,
    m: &Moment,
    kind: MomentKind,
    person: &Person<'_>,
) -> Result<Result<(), String>, StoreError> {
    let rules = &settings.moments;
    if !rules.enabled {
        return Ok(Err("advocacy moments are off ([moments] enabled)".into()));
    }
    if !rules.kinds.contains(&kind) {
        return Ok(Err(format!("`{kind}` is not in [moments] kinds")));
    }
    if kind == MomentKind::Nps {
        let score = m
            .score
            .ok_or_else(|| StoreError::Corrupt(format!("NPS moment {} has no score", m.id)))?;
        if score < i64::from(rules.nps_min) {
            return Ok(Err(format!(
                "NPS {score} is below [moments] nps_min ({})",
                rules.nps_min
            )));
        }
    }
    let mut latest_nps = None;
    for x in &person.moments {
        if x.kind == MomentKind::Nps.as_str() && x.occurred_at <= m.occurred_at {
            latest_nps = x.score.or(latest_nps);
        }
    }
    if let Some(score) = latest_nps.filter(|s| *s <= DETRACTOR_MAX) {
        return Ok(Err(format!(
            "the latest NPS score ({score}) is {DETRACTOR_MAX} or less"
        )));
    }
    let cooldown = i64::from(rules.cooldown_days) * DAY;
    if person
        .asked
        .iter()
        .any(|at| (at - m.occurred_at).abs() < cooldown)
    {
        return Ok(Err(format!(
            "asked within [moments] cooldown_days ({})",
            rules.cooldown_days
        )));
    }
    let window_of = |market: Option<&str>| {
        let days = market
            .and_then(|mk| settings.programs.get(mk))
            .map_or(365, |p| p.attribution_window_days);
        i64::from(days) * DAY
    };
    if person
        .open
        .iter()
        .any(|o| o.first_touch_at + window_of(o.market.as_deref()) > m.occurred_at)
    {
        return Ok(Err("a referrer with an open referral".into()));
    }
    if !person.has_contact {
        return Ok(Err(
            "no HubSpot contact or Salesforce Contact has this email".into(),
        ));
    }
    Ok(Ok(()))
}
