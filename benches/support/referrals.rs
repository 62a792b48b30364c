//! The report benchmarks' data: 1,000,000 referrals (by default) over 2 markets × 4 sources ×
//! 2,000 referrers, ~25% with a deal, ~8% won with a reward, some reversed, and 4,000,000 deals no
//! referral touches (HubSpot and Salesforce, 3 pipelines, 8 CRM sources each, 40% qualified, 15%
//! won, each won deal with a contact), counted in the baseline rollup as they are generated and
//! written straight into a migrated SQLite database (won deals are marked and counted by the
//! store's own refresh before anything is timed). `cargo bench --bench funnel` times the
//! report over it and `cargo bench --bench console` the Program page that draws it.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Instant;

use referral_sync::config::{ConfigSources, Secret, Settings};
use referral_sync::domain::Crm;
use referral_sync::store::{Cohort, Rolled, Store};

use super::Rng;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};

const REFERRERS: u64 = 2_000;
const MARKETS: [(&str, &str); 2] = [("US", "USD"), ("RU", "RUB")];
const SOURCES: [&str; 4] = ["link", "code", "intro", "pool"];
pub const DAY: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
pub const START: i64 = 1_767_225_600_000;
/// Rows per INSERT statement: well under SQLite's 32,766 bound parameters.
const CHUNK: usize = 1_500;
/// Pipelines of the deals no referral touches, with their market, and their CRM sources.
const PIPELINES: [(&str, &str); 3] = [("default", "US"), ("ru-sales", "RU"), ("renewals", "US")];
const HUBSPOT_SOURCES: [&str; 8] = [
    "ORGANIC_SEARCH",
    "PAID_SEARCH",
    "DIRECT_TRAFFIC",
    "OFFLINE",
    "REFERRALS",
    "SOCIAL_MEDIA",
    "EMAIL_MARKETING",
    "",
];
const SALESFORCE_SOURCES: [&str; 8] = [
    "Web",
    "Partner Referral",
    "Trade Show",
    "Advertisement",
    "Purchased List",
    "Phone Inquiry",
    "Other",
    "",
];

/// Deals per (cohort key, UTC day): what the rollup counts, built as the deals are generated.
type Rollup = HashMap<(String, i64), (i64, i64)>;

/// Count a deal in the rollup; returns what its row keeps as `baseline_rolled`.
fn roll(rollup: &mut Rollup, cohort: Cohort, created: i64, qualified: bool) -> String {
    let rolled = Rolled {
        cohort,
        day: created.div_euclid(DAY),
        qualified,
        // Won deals are marked and counted into the won rollups by the store's own refresh.
        won: None,
    };
    let count = rollup.entry((rolled.cohort.key(), rolled.day)).or_default();
    count.0 += 1;
    count.1 += i64::from(qualified);
    rolled.to_text()
}

/// One bound value of a generated row.
enum V {
    Text(String),
    Int(i64),
    Null,
}

/// Insert `rows` into `table` with multi-row INSERTs in one transaction.
async fn insert(conn: &mut SqliteConnection, table: &str, columns: &[&str], rows: Vec<Vec<V>>) {
    let width = columns.len();
    let mut tx = conn.begin().await.expect("begin");
    for chunk in rows.chunks(CHUNK) {
        // Anonymous `?`: sqlx looks each `$N` up by name, quadratic in a 20,000-parameter statement.
        let tuple = format!("({})", vec!["?"; width].join(", "));
        let tuples = vec![tuple.as_str(); chunk.len()];
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES {}",
            columns.join(", "),
            tuples.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for row in chunk {
            for value in row {
                query = match value {
                    V::Text(s) => query.bind(s.as_str()),
                    V::Int(i) => query.bind(*i),
                    V::Null => query.bind(None::<i64>),
                };
            }
        }
        query.execute(&mut *tx).await.expect("insert");
    }
    tx.commit().await.expect("commit");
}

async fn fill(url: &str, referrals: u64, deals: u64) {
    let options = SqliteConnectOptions::from_str(url)
        .expect("url")
        .journal_mode(SqliteJournalMode::Wal)
        // Setup only; the measured store uses its own connections, with full durability.
        .synchronous(SqliteSynchronous::Off)
        // Random-order index inserts thrash SQLite's default 2 MB page cache.
        .pragma("cache_size", "-1048576");
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .expect("open");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut rollup = Rollup::new();

    let mut referrers = Vec::new();
    for i in 0..REFERRERS {
        let (market, _) = MARKETS[(i % 2) as usize];
        let invited_at = START - 60 * DAY + rng.below(30) as i64 * DAY;
        let joined = rng.chance(800);
        referrers.push(vec![
            V::Text(uuid::Uuid::now_v7().to_string()),
            V::Text(format!("P-{i:05}")),
            V::Text(format!("partner{i}@partners.example")),
            V::Text(market.into()),
            V::Text(if joined { "joined" } else { "invited" }.into()),
            V::Int(invited_at),
            if joined {
                V::Int(invited_at + 3 * DAY)
            } else {
                V::Null
            },
            V::Int(invited_at),
            V::Int(invited_at),
        ]);
    }
    insert(
        &mut conn,
        "referrers",
        &[
            "id",
            "code",
            "email",
            "market",
            "status",
            "invited_at",
            "joined_at",
            "created_at",
            "updated_at",
        ],
        referrers,
    )
    .await;

    let calculation = json!({
        "program": "US", "kind": "percent_of_deal", "percent": "10", "cap": null, "tier": "bronze",
        "multiplier": "1.0", "successful_referrals": 1, "deal_amount": "12345.67",
        "deal_currency": "USD", "fx_rate": null, "window_days": 365, "hold_days": 30,
    })
    .to_string();
    let batch = 100_000u64;
    let mut done = 0u64;
    while done < referrals {
        let n = batch.min(referrals - done);
        let (mut refs, mut deals, mut rewards) = (Vec::new(), Vec::new(), Vec::new());
        for i in done..done + n {
            let id = uuid::Uuid::now_v7().to_string();
            // Referrers of a market mostly refer into it; 5% of referees are in the other one.
            let referrer = rng.below(REFERRERS);
            let mut m = (referrer % 2) as usize;
            if rng.chance(50) {
                m = 1 - m;
            }
            let (market, currency) = MARKETS[m];
            let source = SOURCES[rng.below(4) as usize];
            let first_touch = START + rng.below(365 * DAY as u64) as i64;
            let qualified = rng.chance(250);
            let won = qualified && rng.chance(320);
            let won_at =
                first_touch + (5 + rng.below(175) as i64) * DAY + rng.below(DAY as u64) as i64;
            refs.push(vec![
                V::Text(id.clone()),
                V::Text(format!("referee{i}@example{}.com", i % 997)),
                if source == "pool" && rng.chance(300) {
                    V::Null
                } else {
                    V::Text(format!("P-{referrer:05}"))
                },
                V::Text(source.into()),
                V::Text(market.into()),
                V::Int(first_touch),
                if qualified {
                    V::Int(first_touch + 2 * DAY)
                } else {
                    V::Null
                },
                if won { V::Int(won_at) } else { V::Null },
                V::Int(first_touch),
                V::Int(first_touch),
            ]);
            if !qualified {
                continue;
            }
            let cents = 100_000 + rng.below(9_900_000) as i64;
            let deal_currency = if rng.chance(30) { "EUR" } else { currency };
            let stage = if won {
                "won"
            } else if rng.chance(400) {
                "lost"
            } else {
                "proposal"
            };
            let created = first_touch + DAY;
            let pipeline = if m == 0 { "default" } else { "ru-sales" };
            let cohort = Cohort {
                crm: Crm::HubSpot,
                referred: true,
                market: Some(market.into()),
                source: Some(source.into()),
                pipeline: Some(pipeline.into()),
                currency: Some(deal_currency.into()),
                crm_source: None,
            }
            .normalised();
            deals.push(vec![
                V::Text("hubspot".into()),
                V::Text("deal".into()),
                V::Text(format!("{}", 10_000_000 + i)),
                V::Text(id.clone()),
                V::Text(market.into()),
                V::Text(source.into()),
                V::Null,
                V::Text(pipeline.into()),
                V::Text(stage.into()),
                V::Text(format!("{}.{:02}", cents / 100, cents % 100)),
                V::Text(deal_currency.into()),
                V::Int(created),
                V::Int(first_touch + 2 * DAY),
                if won { V::Int(won_at) } else { V::Null },
                V::Text(roll(&mut rollup, cohort, created, true)),
                V::Int(first_touch),
                V::Int(first_touch),
            ]);
            if !won {
                continue;
            }
            let reward = cents / 10;
            let mut beneficiaries = vec!["referrer"];
            if rng.chance(500) {
                beneficiaries.push("referee");
            }
            for beneficiary in beneficiaries {
                let status = if rng.chance(50) {
                    "reversed"
                } else if rng.chance(600) {
                    "paid"
                } else {
                    "eligible"
                };
                rewards.push(vec![
                    V::Text(uuid::Uuid::now_v7().to_string()),
                    V::Text("hubspot".into()),
                    V::Text(format!("{}", 10_000_000 + i)),
                    V::Text(beneficiary.into()),
                    V::Text(id.clone()),
                    V::Text(format!("P-{referrer:05}")),
                    V::Text(market.into()),
                    V::Text(status.into()),
                    V::Text("percent_of_deal".into()),
                    V::Text(format!("{}.{:02}", reward / 100, reward % 100)),
                    V::Text(currency.into()),
                    V::Text(calculation.clone()),
                    V::Int(won_at),
                    V::Int(won_at),
                    V::Int(won_at),
                ]);
            }
        }
        insert(
            &mut conn,
            "referrals",
            &[
                "id",
                "email",
                "referrer_code",
                "source",
                "market",
                "first_touch_at",
                "qualified_at",
                "won_at",
                "created_at",
                "updated_at",
            ],
            refs,
        )
        .await;
        insert(&mut conn, "crm_records", &DEAL_COLUMNS, deals).await;
        insert(
            &mut conn,
            "rewards",
            &[
                "id",
                "crm",
                "deal_id",
                "beneficiary",
                "referral_id",
                "referrer_code",
                "market",
                "status",
                "kind",
                "amount",
                "currency",
                "calculation",
                "won_at",
                "created_at",
                "updated_at",
            ],
            rewards,
        )
        .await;
        done += n;
    }
    fill_other_deals(&mut conn, &mut rng, &mut rollup, deals).await;
    let rows: Vec<Vec<V>> = rollup
        .into_iter()
        .map(|((cohort, day), (deals, qualified))| {
            vec![
                V::Text(cohort),
                V::Int(day),
                V::Int(deals),
                V::Int(qualified),
            ]
        })
        .collect();
    insert(
        &mut conn,
        "deal_cohorts",
        &["cohort", "created_day", "deals", "qualified"],
        rows,
    )
    .await;
    sqlx::query(
        "UPDATE crm_records SET baseline_dirty = TRUE \
         WHERE stage = 'won' AND object_type IN ('deal', 'Opportunity')",
    )
    .execute(&mut conn)
    .await
    .expect("mark won deals");
    conn.close().await.expect("close");
}

/// The columns of a generated deal.
const DEAL_COLUMNS: [&str; 17] = [
    "crm",
    "object_type",
    "object_id",
    "referral_id",
    "market",
    "source",
    "crm_source",
    "pipeline",
    "stage",
    "amount",
    "currency",
    "crm_created_at",
    "qualified_at",
    "won_at",
    "baseline_rolled",
    "created_at",
    "updated_at",
];

/// `deals` deals no referral touches, counted in the rollup; every won one has a contact, a
/// customer since the win.
async fn fill_other_deals(
    conn: &mut SqliteConnection,
    rng: &mut Rng,
    rollup: &mut Rollup,
    deals: u64,
) {
    let batch = 100_000u64;
    let mut done = 0u64;
    while done < deals {
        let n = batch.min(deals - done);
        let (mut rows, mut contacts, mut associations) = (Vec::new(), Vec::new(), Vec::new());
        for i in done..done + n {
            let salesforce = rng.chance(250);
            let (crm, object_type, id) = if salesforce {
                ("salesforce", "Opportunity", format!("006B{i:014}"))
            } else {
                ("hubspot", "deal", format!("{}", 50_000_000 + i))
            };
            let (pipeline, market) = PIPELINES[rng.below(3) as usize];
            let currency = match (market, rng.chance(30)) {
                (_, true) => "EUR",
                ("US", _) => "USD",
                _ => "RUB",
            };
            let source = if salesforce {
                SALESFORCE_SOURCES[rng.below(8) as usize]
            } else {
                HUBSPOT_SOURCES[rng.below(8) as usize]
            };
            let source = (!source.is_empty()).then_some(source);
            let created = START + rng.below(365 * DAY as u64) as i64;
            let qualified = rng.chance(400);
            let won = qualified && rng.chance(375);
            let stage = match (won, qualified) {
                (true, _) => "won",
                (false, true) if rng.chance(500) => "lost",
                (false, true) => "proposal",
                (false, false) if rng.chance(400) => "lost",
                _ => "lead",
            };
            let won_at = created + (5 + rng.below(175) as i64) * DAY;
            let cents = 50_000 + rng.below(4_950_000) as i64;
            let pipeline = (!salesforce).then_some(pipeline);
            let cohort = Cohort {
                crm: if salesforce {
                    Crm::Salesforce
                } else {
                    Crm::HubSpot
                },
                referred: false,
                market: None,
                source: None,
                pipeline: pipeline.map(String::from),
                currency: Some(currency.into()),
                crm_source: source.map(String::from),
            }
            .normalised();
            let customer_cohort = cohort.key();
            let text = |v: Option<&str>| v.map_or(V::Null, |v| V::Text(v.into()));
            rows.push(vec![
                V::Text(crm.into()),
                V::Text(object_type.into()),
                V::Text(id.clone()),
                V::Null,
                V::Null,
                V::Null,
                text(source),
                text(pipeline),
                V::Text(stage.into()),
                V::Text(format!("{}.{:02}", cents / 100, cents % 100)),
                V::Text(currency.into()),
                V::Int(created),
                if qualified {
                    V::Int(created + 3 * DAY)
                } else {
                    V::Null
                },
                if won { V::Int(won_at) } else { V::Null },
                V::Text(roll(rollup, cohort, created, qualified)),
                V::Int(created),
                V::Int(created),
            ]);
            if won {
                let contact = format!("c{i}");
                contacts.push(vec![
                    V::Text(crm.into()),
                    V::Text(if salesforce { "Contact" } else { "contact" }.into()),
                    V::Text(contact.clone()),
                    V::Text(format!("buyer{i}@customer{}.com", i % 997)),
                    V::Int(won_at),
                    V::Text(customer_cohort),
                    V::Int(created),
                    V::Int(created),
                ]);
                associations.push(vec![
                    V::Text(crm.into()),
                    V::Text(id),
                    V::Text(contact),
                    V::Int(0),
                    V::Int(created),
                ]);
            }
        }
        insert(conn, "crm_records", &DEAL_COLUMNS, rows).await;
        insert(
            conn,
            "crm_records",
            &[
                "crm",
                "object_type",
                "object_id",
                "email",
                "customer_since",
                "customer_cohort",
                "created_at",
                "updated_at",
            ],
            contacts,
        )
        .await;
        insert(
            conn,
            "crm_associations",
            &["crm", "deal_id", "contact_id", "removed", "occurred_at"],
            associations,
        )
        .await;
        done += n;
    }
}

/// The benchmark's markets and channels, as RevOps would configure them.
pub fn configure(settings: &mut Settings) {
    for (pipeline, market) in PIPELINES {
        settings
            .channels
            .market_by_pipeline
            .insert(pipeline.into(), market.into());
    }
    for (currency, market) in [("USD", "US"), ("RUB", "RU")] {
        settings
            .channels
            .market_by_currency
            .insert(currency.into(), market.into());
    }
    settings.renewals.hubspot_pipelines = vec!["renewals".into()];
}

/// Mark every `every`-th deal as written since the rollup's last refresh, as a processing batch
/// does.
pub async fn mark(url: &str, every: i64) -> u64 {
    let mut conn = SqliteConnection::connect(url).await.expect("open");
    let marked = sqlx::query(
        "UPDATE crm_records SET baseline_dirty = TRUE \
         WHERE object_type IN ('deal', 'Opportunity') AND rowid % $1 = 0",
    )
    .bind(every)
    .execute(&mut conn)
    .await
    .expect("mark deals")
    .rows_affected();
    conn.close().await.expect("close");
    marked
}

/// A migrated store with the benchmark's referrals, and the settings that open it.
pub struct Filled {
    pub store: Store,
    pub settings: Settings,
    pub referrals: u64,
    /// Deals no referral touches.
    pub deals: u64,
    /// The SQLite URL, for benchmarks that write to the database behind the store's back.
    pub url: String,
    /// Seconds spent creating the data (0 when `BENCH_DB` was reused).
    pub setup_s: f64,
    _dir: tempfile::TempDir,
}

/// `BENCH_REFERRALS` referrals (default 1,000,000) and `BENCH_DEALS` deals no referral touches
/// (default 4,000,000) in a temporary SQLite database, or in `BENCH_DB=PATH`, which is kept and
/// reused when it exists (skipping the setup).
pub async fn filled() -> Filled {
    let referrals: u64 = super::env_or("BENCH_REFERRALS", 1_000_000);
    let deals: u64 = super::env_or("BENCH_DEALS", 4_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let kept = std::env::var("BENCH_DB").ok();
    let reuse = kept
        .as_deref()
        .is_some_and(|p| std::path::Path::new(p).exists());
    let path = kept.unwrap_or_else(|| format!("{}/funnel.db", dir.path().display()));
    let url = format!("sqlite://{path}");
    let mut settings = Settings::load(&ConfigSources {
        file: None,
        dir: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/config").into()),
        env: Some(BTreeMap::new()),
    })
    .expect("config/default.toml is valid");
    settings.database.url = Secret::new(url.clone());
    configure(&mut settings);

    let setup = Instant::now();
    let store = Store::connect(&settings.database).await.expect("connect");
    store.migrate().await.expect("migrate");
    if !reuse {
        fill(&url, referrals, deals).await;
    }
    // What is marked (the won deals of a new database, or what a migration marked) is counted
    // before anything is timed.
    loop {
        let mut tx = store.begin().await.expect("begin");
        let n = tx.refresh_baseline(10_000).await.expect("refresh");
        tx.commit().await.expect("commit");
        if n == 0 {
            break;
        }
    }
    Filled {
        store,
        settings,
        referrals,
        deals,
        url,
        setup_s: setup.elapsed().as_secs_f64(),
        _dir: dir,
    }
}
