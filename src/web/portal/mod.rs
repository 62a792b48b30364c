//! The partner portal (`/partners/{code}?token=…`): one referrer's own page, opened by a signed,
//! expiring link ([`link`]). It shows their referrals with their status in plain words, their
//! tier and what the next one needs, their rewards per currency, and their payout statements per
//! currency — in English or Russian ([`locale`]). A link that is missing, altered, expired or made for another code gets a 403 and
//! nothing else. The page never shows a CRM id, anyone else's data, or a deal amount the program
//! does not pay on (only percent-of-deal rewards show the amount they are a percent of).

pub mod link;
pub mod locale;

use std::collections::{BTreeMap, HashMap};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::clock::Millis;
use crate::domain::payout::{PayoutStatus, Period};
use crate::domain::reward::RewardStatus;
use crate::domain::stage::CanonicalStage;
use crate::payouts::Statement;
use crate::rewards::calculate::{amount_computed, tier_for};
use crate::startup::AppState;
use crate::store::{rule_count, Referral, Reward};
use crate::web::{html, WebError};
use locale::{Lang, Texts};

/// Referrals shown, newest first.
const SHOWN: i64 = 500;
/// Payout statements shown, newest period first: two years of a monthly payout in one currency.
pub const STATEMENTS_SHOWN: i64 = 24;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/partners/{code}", web::get().to(get_partner));
}

/// Where one referral stands, in the words a partner reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferralStatus {
    /// Introduced, not signed up (yet).
    Referred,
    SignedUp,
    /// A deal is open (or the referral qualified).
    InPipeline,
    /// Every deal was lost.
    Lost,
    /// Won, and no reward (yet, or the program pays none).
    Won,
    /// The hold runs until this time.
    RewardPending(Millis),
    InReview,
    Eligible,
    Approved,
    Paid,
    Reversed,
    Rejected,
}

impl ReferralStatus {
    /// From the referral, the canonical stages of its live deals, and its latest reward's status
    /// and hold.
    pub fn of(
        referral: &Referral,
        stages: &[Option<CanonicalStage>],
        reward: Option<(RewardStatus, Option<Millis>)>,
    ) -> Self {
        if let Some((status, hold_until)) = reward {
            return match status {
                RewardStatus::Pending => hold_until.map_or(Self::Won, Self::RewardPending),
                RewardStatus::NeedsReview => Self::InReview,
                RewardStatus::Eligible => Self::Eligible,
                RewardStatus::Approved => Self::Approved,
                RewardStatus::Paid => Self::Paid,
                RewardStatus::Reversed => Self::Reversed,
                RewardStatus::Rejected => Self::Rejected,
            };
        }
        if referral.won_at.is_some() || stages.contains(&Some(CanonicalStage::Won)) {
            return Self::Won;
        }
        let open = stages
            .iter()
            .any(|s| !matches!(s, Some(CanonicalStage::Lost)));
        if open || (stages.is_empty() && referral.qualified_at.is_some()) {
            Self::InPipeline
        } else if !stages.is_empty() {
            Self::Lost
        } else if referral.signed_up_at.is_some() {
            Self::SignedUp
        } else {
            Self::Referred
        }
    }

    /// The words, and the tone of their tag (`good`, `warn`, `bad` or none).
    pub fn words(self, lang: Lang) -> (String, &'static str) {
        let (en, ru, tone) = match self {
            Self::Referred => ("referred", "рекомендован", ""),
            Self::SignedUp => ("signed up", "зарегистрировался", ""),
            Self::InPipeline => ("in pipeline", "в работе у отдела продаж", ""),
            Self::Lost => ("closed without a deal", "сделка не состоялась", "bad"),
            Self::Won => ("won", "сделка выиграна", "good"),
            Self::RewardPending(until) => {
                let date = lang.date(until);
                return match lang {
                    Lang::En => (format!("reward pending until {date}"), "warn"),
                    Lang::Ru => (format!("вознаграждение ожидается до {date}"), "warn"),
                };
            }
            Self::InReview => ("reward under review", "вознаграждение на проверке", "warn"),
            Self::Eligible => ("reward confirmed", "вознаграждение подтверждено", "good"),
            Self::Approved => ("approved for payout", "одобрено к выплате", "good"),
            Self::Paid => ("reward paid out", "выплачено", "good"),
            Self::Reversed => (
                "reward reversed: the deal reopened",
                "вознаграждение отменено: сделка возобновлена",
                "bad",
            ),
            Self::Rejected => (
                "not eligible for a reward",
                "не подлежит вознаграждению",
                "bad",
            ),
        };
        (
            match lang {
                Lang::En => en,
                Lang::Ru => ru,
            }
            .to_string(),
            tone,
        )
    }
}

/// How a partner sees a referee: name or company, else the email with its local part hidden.
pub fn referee_label(r: &Referral) -> String {
    let name = r
        .referee_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let company = r
        .referee_company
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    match (name, company) {
        (Some(n), Some(c)) => format!("{n}, {c}"),
        (Some(one), None) | (None, Some(one)) => one.to_string(),
        (None, None) => match r.email().split_once('@') {
            Some((local, domain)) => {
                let shown: String = local.chars().take(2).collect();
                format!("{shown}…@{domain}")
            }
            None => "…".into(),
        },
    }
}

pub struct ReferralRow {
    pub referee: String,
    pub date: String,
    pub status: String,
    pub tone: &'static str,
    pub reward: String,
}

pub struct CurrencyRow {
    pub currency: String,
    pub pending: String,
    pub in_review: String,
    pub to_be_paid: String,
    pub paid: String,
}

/// One payout statement as a partner reads it: never its lines (they name CRM deals).
pub struct StatementRow {
    pub period: String,
    pub status: &'static str,
    pub tone: &'static str,
    pub total: String,
    pub due: String,
    /// When paid: the date and the transfer reference.
    pub payment: String,
}

/// A currency's statements, newest first.
pub struct CurrencyStatements {
    pub currency: String,
    pub statements: Vec<StatementRow>,
}

/// A statement's status in plain words, and the tone of its tag.
pub fn statement_words(status: PayoutStatus, lang: Lang) -> (&'static str, &'static str) {
    let t = lang.texts();
    match status {
        PayoutStatus::Open => (t.statement_open, "warn"),
        PayoutStatus::Paid => (t.statement_paid, "good"),
    }
}

fn corrupt_statement(s: &Statement, what: impl std::fmt::Display) -> WebError {
    WebError::Internal(anyhow::anyhow!("payout statement {}: {what}", s.id))
}

fn statement_row(s: &Statement, lang: Lang) -> Result<StatementRow, WebError> {
    let t = lang.texts();
    let period: Period = s.period.parse().map_err(|e| corrupt_statement(s, e))?;
    let due = chrono::NaiveDate::parse_from_str(&s.due_date, "%Y-%m-%d")
        .map_err(|e| corrupt_statement(s, format!("due date `{}`: {e}", s.due_date)))?
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_millis();
    let payment = match (s.status, s.paid_at.as_deref()) {
        (PayoutStatus::Paid, Some(at)) => {
            let at = chrono::DateTime::parse_from_rfc3339(at)
                .map_err(|e| corrupt_statement(s, format!("paid at `{at}`: {e}")))?
                .timestamp_millis();
            t.paid_with
                .replace("{date}", &lang.date(at))
                .replace("{reference}", s.reference.as_deref().unwrap_or("–"))
        }
        _ => String::new(),
    };
    let (status, tone) = statement_words(s.status, lang);
    Ok(StatementRow {
        period: lang.month(period.start()),
        status,
        tone,
        total: lang.money(&s.currency, s.total),
        due: lang.date(due),
        payment,
    })
}

/// Statements (newest first) grouped by currency, each group keeping that order.
fn by_currency(statements: &[Statement], lang: Lang) -> Result<Vec<CurrencyStatements>, WebError> {
    let mut groups: BTreeMap<&str, Vec<StatementRow>> = BTreeMap::new();
    for s in statements {
        groups
            .entry(s.currency.as_str())
            .or_default()
            .push(statement_row(s, lang)?);
    }
    Ok(groups
        .into_iter()
        .map(|(currency, statements)| CurrencyStatements {
            currency: currency.to_string(),
            statements,
        })
        .collect())
}

pub struct TierView {
    pub name: String,
    pub successful: String,
    pub next: String,
    /// Width of the progress bar towards the next tier, of 260.
    pub progress: u32,
}

#[derive(Template)]
#[template(path = "portal/templates/partner.html")]
struct PartnerPage<'a> {
    t: &'a Texts,
    name: String,
    code: String,
    other_language_href: String,
    tier: Option<TierView>,
    currencies: Vec<CurrencyRow>,
    payouts: Vec<CurrencyStatements>,
    more_payouts: String,
    referrals: Vec<ReferralRow>,
    more: bool,
    expires: String,
}

/// The first value of each query parameter (a repeated one does not make the request fail).
fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// This page's own address with `lang` switched, relative to the site.
fn page_href(code: &str, token: &str, lang: Lang) -> String {
    let mut url = url::Url::parse("http://portal.invalid/").expect("a valid URL");
    if let Ok(mut path) = url.path_segments_mut() {
        path.clear().push("partners").push(code);
    }
    url.query_pairs_mut()
        .append_pair("token", token)
        .append_pair("lang", lang.code());
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

fn corrupt(reward: &Reward, what: impl std::fmt::Display) -> WebError {
    WebError::Internal(anyhow::anyhow!("reward {}: {what}", reward.id))
}

/// What a reward shows in its referral's row: the amount, and for a percent-of-deal reward the
/// percent and the amount it is a percent of.
fn reward_text(reward: &Reward, amount: Decimal, lang: Lang) -> Result<String, WebError> {
    let t = lang.texts();
    if !amount_computed(&reward.line.calculation) {
        return Ok(t.not_computed.to_string());
    }
    let shown = lang.money(&reward.line.currency, amount);
    if reward.line.kind != "percent_of_deal" {
        return Ok(shown);
    }
    let calculation: Value =
        serde_json::from_str(&reward.line.calculation).map_err(|e| corrupt(reward, e))?;
    let decimal = |v: Option<&Value>| -> Result<Option<Decimal>, WebError> {
        v.and_then(Value::as_str)
            .map(|s| s.parse::<Decimal>().map_err(|e| corrupt(reward, e)))
            .transpose()
    };
    let percent = decimal(calculation.pointer("/rule/percent"))?;
    let base = decimal(calculation.get("deal_amount_converted"))?;
    Ok(match (percent, base) {
        (Some(percent), Some(base)) => format!(
            "{shown} · {}",
            t.percent_of
                .replace("{percent}", &lang.decimal(percent))
                .replace("{amount}", &lang.money(&reward.line.currency, base))
        ),
        _ => shown,
    })
}

/// `GET /partners/{code}?token=…&lang=`.
pub async fn get_partner(
    req: HttpRequest,
    code: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let token = query_param(&req, "token");
    let now = state.clock.now();
    if let Err(why) = link::verify(
        &state.settings.portal.link_secret,
        &code,
        token.as_deref(),
        now,
    ) {
        tracing::info!(reason = %why, "partner portal link refused");
        return Err(WebError::Forbidden(
            "This link is not valid or has expired. / Ссылка недействительна или устарела.".into(),
        ));
    }
    let token = token.unwrap_or_default();
    let store = &state.store;
    let referrer = store
        .referrer_by_code(&code)
        .await?
        .ok_or_else(|| WebError::NotFound("No such partner. / Партнёр не найден.".into()))?;
    let lang = Lang::choose(
        query_param(&req, "lang").as_deref(),
        referrer.facts.market.as_deref(),
    );
    let t = lang.texts();

    let referrals = store.partner_referrals(&code, SHOWN).await?;
    let mut stages: HashMap<String, Vec<Option<CanonicalStage>>> = HashMap::new();
    for (referral_id, stage) in store.partner_deal_stages(&code).await? {
        let stage = stage
            .map(|s| {
                s.parse::<CanonicalStage>().map_err(|e| {
                    WebError::Internal(anyhow::anyhow!("deal of referral {referral_id}: {e}"))
                })
            })
            .transpose()?;
        stages.entry(referral_id).or_default().push(stage);
    }
    let rewards = store.partner_rewards(&code).await?;
    let statements = crate::payouts::of_referrer(store, &code, STATEMENTS_SHOWN).await?;
    let mut latest: HashMap<&str, (&Reward, RewardStatus, Decimal)> = HashMap::new();
    let mut totals: BTreeMap<String, [Decimal; 4]> = BTreeMap::new();
    for r in &rewards {
        let status = r.line.status;
        let amount: Decimal = r.line.amount.parse().map_err(|e| corrupt(r, e))?;
        // Rewards come oldest first, so the last one of a referral is its latest.
        latest.insert(r.line.referral_id.as_str(), (r, status, amount));
        let column = match status {
            RewardStatus::Pending => 0,
            RewardStatus::NeedsReview => 1,
            RewardStatus::Eligible | RewardStatus::Approved => 2,
            RewardStatus::Paid => 3,
            RewardStatus::Reversed | RewardStatus::Rejected => continue,
        };
        let sums = totals.entry(r.line.currency.clone()).or_default();
        sums[column] += amount;
    }

    let rows = referrals
        .iter()
        .map(|referral| {
            let reward = latest.get(referral.id());
            let status = ReferralStatus::of(
                referral,
                stages.get(referral.id()).map_or(&[][..], Vec::as_slice),
                reward.map(|(r, s, _)| (*s, r.line.hold_until)),
            );
            let (words, tone) = status.words(lang);
            Ok(ReferralRow {
                referee: referee_label(referral),
                date: lang.date(referral.attribution().first_touch_at),
                status: words,
                tone,
                reward: match reward {
                    Some((r, _, amount)) => reward_text(r, *amount, lang)?,
                    None => String::new(),
                },
            })
        })
        .collect::<Result<Vec<_>, WebError>>()?;

    let market = referrer
        .facts
        .market
        .clone()
        .unwrap_or_else(|| state.settings.rewards.default_market.clone());
    let tier = match state.settings.programs.get(&market) {
        Some(program) => {
            let (_, won) = store.referrer_counts(&code).await?;
            let successful = rule_count(won)?;
            let current = tier_for(&program.tiers, successful);
            let next = program
                .tiers
                .iter()
                .filter(|t| t.min_successful > successful)
                .min_by_key(|t| t.min_successful);
            let (next_text, progress) = match (current, next) {
                (_, Some(n)) => (
                    if current.is_none() && n.min_successful == 1 {
                        t.first_tier.replace("{tier}", &n.name)
                    } else {
                        t.next_tier
                            .replace("{n}", &(n.min_successful - successful).to_string())
                            .replace("{tier}", &n.name)
                            .replace("{multiplier}", &lang.decimal(n.multiplier))
                    },
                    260 * successful / n.min_successful.max(1),
                ),
                (_, None) => (t.top_tier.to_string(), 260),
            };
            Some(TierView {
                name: current.map_or_else(|| "–".to_string(), |c| c.name.clone()),
                successful: successful.to_string(),
                next: next_text,
                progress,
            })
        }
        None => None,
    };
    let expires = token
        .split_once('.')
        .and_then(|(s, _)| s.parse::<i64>().ok())
        .map(|s| lang.date(s * 1000))
        .unwrap_or_default();
    let page = PartnerPage {
        t,
        name: referrer
            .facts
            .name
            .clone()
            .unwrap_or_else(|| code.to_string()),
        other_language_href: page_href(&code, &token, lang.other()),
        code: code.to_string(),
        tier,
        currencies: totals
            .into_iter()
            .map(|(currency, [pending, review, due, paid])| CurrencyRow {
                pending: lang.money(&currency, pending),
                in_review: lang.money(&currency, review),
                to_be_paid: lang.money(&currency, due),
                paid: lang.money(&currency, paid),
                currency,
            })
            .collect(),
        payouts: by_currency(&statements, lang)?,
        more_payouts: if statements.len() as i64 == STATEMENTS_SHOWN {
            t.more_payouts.replace("{n}", &STATEMENTS_SHOWN.to_string())
        } else {
            String::new()
        },
        more: referrals.len() as i64 == SHOWN,
        referrals: rows,
        expires: t.expires.replace("{date}", &expires),
    };
    Ok(html(StatusCode::OK, page.render()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Attribution, NewReferral};

    fn referral() -> Referral {
        Referral {
            first_touch: NewReferral {
                id: "r".into(),
                email: "ana@northwind.io".into(),
                attribution: Attribution {
                    referrer_code: Some("ACME-7".into()),
                    source: Some("link".into()),
                    market: Some("US".into()),
                    first_touch_at: 0,
                },
            },
            referee_name: None,
            referee_company: None,
            utm: "{}".into(),
            signup_ip: None,
            signed_up_at: None,
            activated_at: None,
            qualified_at: None,
            won_at: None,
        }
    }

    #[test]
    fn statuses_follow_the_deal_and_then_the_reward() {
        use CanonicalStage::*;
        let r = referral();
        assert_eq!(ReferralStatus::of(&r, &[], None), ReferralStatus::Referred);
        let signed = Referral {
            signed_up_at: Some(1),
            ..referral()
        };
        assert_eq!(
            ReferralStatus::of(&signed, &[], None),
            ReferralStatus::SignedUp
        );
        assert_eq!(
            ReferralStatus::of(&signed, &[Some(Demo), Some(Lost)], None),
            ReferralStatus::InPipeline,
            "one deal still open"
        );
        assert_eq!(
            ReferralStatus::of(&signed, &[None], None),
            ReferralStatus::InPipeline,
            "an unmapped stage is still open"
        );
        assert_eq!(
            ReferralStatus::of(&signed, &[Some(Lost)], None),
            ReferralStatus::Lost
        );
        let won = Referral {
            won_at: Some(5),
            ..referral()
        };
        assert_eq!(
            ReferralStatus::of(&won, &[Some(Won)], None),
            ReferralStatus::Won
        );
        assert_eq!(
            ReferralStatus::of(&won, &[Some(Won)], Some((RewardStatus::Pending, Some(99)))),
            ReferralStatus::RewardPending(99)
        );
        assert_eq!(
            ReferralStatus::of(&won, &[], Some((RewardStatus::Paid, None))),
            ReferralStatus::Paid
        );
    }

    #[test]
    fn statuses_read_in_both_languages() {
        let until = 1_795_168_800_000;
        assert_eq!(
            ReferralStatus::RewardPending(until).words(Lang::En).0,
            "reward pending until Nov 20, 2026"
        );
        assert_eq!(
            ReferralStatus::RewardPending(until).words(Lang::Ru).0,
            "вознаграждение ожидается до 20 ноября 2026\u{a0}г."
        );
        assert_eq!(ReferralStatus::SignedUp.words(Lang::En).0, "signed up");
        assert_eq!(ReferralStatus::Paid.words(Lang::Ru).0, "выплачено");
    }

    #[test]
    fn referees_are_named_without_showing_their_email() {
        assert_eq!(referee_label(&referral()), "an…@northwind.io");
        let named = Referral {
            referee_name: Some("Ana".into()),
            referee_company: Some("Northwind".into()),
            ..referral()
        };
        assert_eq!(referee_label(&named), "Ana, Northwind");
    }

    #[test]
    fn the_language_link_keeps_the_token_and_encodes_the_code() {
        assert_eq!(
            page_href("ACME 7", "123.abc-_", Lang::Ru),
            "/partners/ACME%207?token=123.abc-_&lang=ru"
        );
    }
}
