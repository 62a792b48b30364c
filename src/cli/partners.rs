//! `referral-sync partners import FILE`: load existing referrers from CSV with the header
//! `code,name,email,company_domain,market,kind` (only `code` is required). Each row is applied like
//! a `partner.joined` event, so importing twice changes nothing.
//!
//! `referral-sync partners link CODE [--days N]`: print a signed partner-portal link.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::domain::market::Market;
use crate::ingest::product::normalize_email;
use crate::store::{ReferrerFacts, Store};

#[derive(Debug, Deserialize)]
struct Row {
    code: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    company_domain: Option<String>,
    #[serde(default)]
    market: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Parse and validate every row first (reporting each bad line), then store them in one transaction.
pub async fn import(store: &Store, path: &Path) -> anyhow::Result<usize> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let mut facts = Vec::new();
    let mut problems = Vec::new();
    for (i, row) in reader.deserialize::<Row>().enumerate() {
        let line = i + 2; // the header is line 1
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let kind = non_empty(row.kind).unwrap_or_else(|| "partner".into());
        if !matches!(kind.as_str(), "customer" | "partner" | "creator") {
            problems.push(format!(
                "line {line}: kind `{kind}` is not one of customer, partner, creator"
            ));
        }
        if row.code.is_empty() || row.code.chars().any(char::is_whitespace) {
            problems.push(format!(
                "line {line}: code must be non-empty without spaces"
            ));
        }
        let market = match non_empty(row.market).map(|m| Market::parse(&m)).transpose() {
            Ok(market) => market.map(Market::into_string),
            Err(e) => {
                problems.push(format!("line {line}: market {e}"));
                None
            }
        };
        facts.push(ReferrerFacts {
            code: row.code,
            name: non_empty(row.name),
            email: non_empty(row.email).map(|e| normalize_email(&e)),
            company_domain: non_empty(row.company_domain).map(|d| d.to_lowercase()),
            market,
            kind,
        });
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "nothing imported; fix these rows:\n  {}",
            problems.join("\n  ")
        );
    }
    let now = SystemClock.now();
    let mut tx = store.begin().await?;
    for f in &facts {
        tx.upsert_referrer(f, true, now, now).await?;
    }
    tx.commit().await?;
    Ok(facts.len())
}

/// A signed portal link for a known referrer, valid `days` days (default `portal.link_days`).
pub async fn link(
    store: &Store,
    settings: &Settings,
    code: &str,
    days: Option<i64>,
) -> anyhow::Result<String> {
    let days = days.unwrap_or(i64::from(settings.portal.link_days));
    let url = crate::web::portal::link::link(settings, code, days, SystemClock.now(), None)?;
    if store.referrer_by_code(code).await?.is_none() {
        anyhow::bail!("no referrer with code {code}: a link would open an empty page");
    }
    Ok(url)
}
