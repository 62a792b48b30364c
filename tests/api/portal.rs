//! The partner portal over HTTP, on both backends: a signed link shows its partner's own
//! referrals, statuses, tier and rewards — in Russian for the RU market, English otherwise, either
//! on request — and never a CRM id, another partner's data or a deal amount the program does not
//! pay on; a link that is missing, altered, expired or for another code gets 403 and nothing else.
//! `partners link` prints links the server accepts. A partner sees their own payout statements per
//! currency, newest first, and no one else's.

use referral_sync::clock::{DAY, HOUR};
use referral_sync::config::Secret;

use crate::admin::call;
use crate::both_backends;
use crate::payouts::seed_lines;
use crate::support::console::{
    console_app, reward_of, seed, ADMIN_KEY, ADMIN_NAME, BO_DEAL, CY_DEAL, EVE_DEAL, GUS_DEAL,
    GUS_DEAL_AMOUNT, LINK_SECRET, READ_KEY,
};
use crate::support::{spawn_app_with, Backend, TestApp, T0};
use serde_json::{json, Value};

both_backends!(
    a_partner_sees_their_own_referrals_tier_and_rewards_and_nothing_else,
    the_ru_market_reads_russian_by_default_and_lang_switches,
    a_missing_altered_expired_or_foreign_token_gets_403_and_nothing_else,
    a_partner_sees_their_payout_statements_per_currency_and_no_one_elses,
);

/// What a partner page must never contain: CRM ids, referees' full emails.
fn assert_no_crm_ids_or_emails(page: &str) {
    for id in [
        EVE_DEAL, BO_DEAL, CY_DEAL, GUS_DEAL, 4_440_011, 4_440_012, 4_440_013, 4_440_014,
    ] {
        assert!(!page.contains(&id.to_string()), "CRM id {id} shown");
    }
    for email in [
        "eve@acme.com",
        "bo@contoso.com",
        "cy@fabrikam.com",
        "gus@initech.ru",
    ] {
        assert!(!page.contains(email), "{email} shown");
    }
    assert!(
        !page.contains("hubspot") && !page.contains("62515"),
        "no CRM names or portal ids"
    );
}

async fn a_partner_sees_their_own_referrals_tier_and_rewards_and_nothing_else(backend: Backend) {
    let Some(app) = console_app(backend).await else {
        return;
    };
    seed(&app).await;

    let (status, _, acme) = app.page(&app.portal_path("ACME-7", 30), None).await;
    let (_, _, beta) = app.page(&app.portal_path("BETA-2", 30), None).await;

    assert_eq!(status, 200);
    for expected in [
        "id=\"partner-name\">Acme Partners</h1>",
        "<html lang=\"en\">",
        // eve: won, reward waiting for review; bo: deal open; cy: won, in its 30-day hold.
        "Eve, Eve Inc",
        "reward under review",
        "Bo, Bo Inc",
        "in pipeline",
        "reward pending until Dec 19, 2026",
        // cy's reward: 7.5% of the 20,000 USD deal the program pays on.
        "$1,500.00 · 7.5% of $20,000.00",
        // Tier: two successful referrals, silver at three.
        "id=\"tier-name\">bronze</div>",
        "1 more successful referral(s) to reach silver (×1.5 rewards).",
        // Rewards per currency: 1,500 pending, 3,000 in review.
        "data-currency=\"USD\"><td>USD</td><td class=\"num\">$1,500.00</td><td class=\"num\">$3,000.00</td>",
        "valid until Dec 20, 2026",
    ] {
        assert!(acme.contains(expected), "{expected} on ACME-7's page");
    }
    assert!(!acme.contains("Gus") && !acme.contains("RUB") && !acme.contains("Beta"));
    assert!(
        !acme.contains("$500.00"),
        "the referees' own credits are not the partner's"
    );
    assert_no_crm_ids_or_emails(&acme);

    assert!(beta.contains("Gus, Gus Inc") && beta.contains("Beta Consulting"));
    for other in ["Acme", "Eve", "Bo,", "Cy,", "$", "USD", "fabrikam"] {
        assert!(!beta.contains(other), "{other} on BETA-2's page");
    }
    for amount in [GUS_DEAL_AMOUNT, "777\u{a0}777", "777,777"] {
        assert!(
            !beta.contains(amount),
            "a flat reward does not pay on the deal amount, so it is not shown"
        );
    }
    assert_no_crm_ids_or_emails(&beta);
}

async fn the_ru_market_reads_russian_by_default_and_lang_switches(backend: Backend) {
    let Some(app) = console_app(backend).await else {
        return;
    };
    seed(&app).await;
    let path = app.portal_path("BETA-2", 30);

    let (_, _, ru) = app.page(&path, None).await;
    let (_, _, en) = app.page(&format!("{path}&lang=en"), None).await;
    let (_, _, us_in_russian) = app
        .page(&format!("{}&lang=ru", app.portal_path("ACME-7", 30)), None)
        .await;

    for expected in [
        "<html lang=\"ru\">",
        "Ваши рекомендации",
        "вознаграждение ожидается до 19 декабря 2026\u{a0}г.",
        "50\u{a0}000,00\u{a0}₽",
        "id=\"tier-name\">member</div>",
        "До уровня insider (вознаграждение ×1,5) осталось успешных рекомендаций: 2.",
        ">English</a>",
    ] {
        assert!(ru.contains(expected), "{expected} on the RU page");
    }
    let switch = ru.split("id=\"language\"").next().unwrap();
    assert!(
        switch.contains(&format!("{path}&#38;lang=en")),
        "the switch keeps the token: {switch}"
    );
    assert!(en.contains("<html lang=\"en\">") && en.contains("RUB\u{a0}50,000.00"));
    assert!(en.contains("reward pending until Dec 19, 2026"));
    assert!(us_in_russian.contains("1\u{a0}500,00\u{a0}$"));
}

async fn a_missing_altered_expired_or_foreign_token_gets_403_and_nothing_else(backend: Backend) {
    let Some(app) = console_app(backend).await else {
        return;
    };
    seed(&app).await;
    let good = app.portal_path("ACME-7", 1);
    let token = good.split("token=").nth(1).unwrap().to_string();
    let (expires, signature) = token.split_once('.').unwrap();
    let stretched = format!(
        "{}.{signature}",
        expires.parse::<i64>().unwrap() + 30 * 86_400
    );
    let mut flipped = signature.to_string();
    flipped.replace_range(0..1, if flipped.starts_with('A') { "B" } else { "A" });
    let wrong_secret = referral_sync::web::portal::link::token(
        &Secret::new("another-secret-that-is-long-enough!!"),
        "ACME-7",
        T0 + DAY,
    );

    let mut refused = Vec::new();
    for path in [
        "/partners/ACME-7".to_string(),
        "/partners/ACME-7?token=".to_string(),
        format!("/partners/ACME-7?token={expires}.{flipped}"),
        format!("/partners/ACME-7?token={stretched}"),
        format!("/partners/ACME-7?token={wrong_secret}"),
        format!("/partners/BETA-2?token={token}"),
        format!("/partners/ACME-7?token={}", token.replace('.', "")),
    ] {
        refused.push((path.clone(), app.page(&path, None).await));
    }
    let (ok_now, _, _) = app.page(&good, None).await;
    app.clock.advance(DAY);
    let (expired, _, expired_page) = app.page(&good, None).await;

    assert_eq!(ok_now, 200, "the untouched link works before it expires");
    refused.push((good.clone(), (expired, String::new(), expired_page)));
    for (path, (status, _, page)) in refused {
        assert_eq!(status, 403, "{path}");
        for leak in [
            "Acme", "ACME-7", "BETA-2", "Eve", "Gus", "USD", "RUB", "referral",
        ] {
            assert!(!page.contains(leak), "{path} shows {leak}");
        }
        assert!(page.contains("This link is not valid or has expired."));
    }

    // A portal without a secret refuses every link, even one that was valid.
    let Some(off) = spawn_app_with(backend, Default::default(), |s| {
        crate::support::console::configure(s);
        s.portal.link_secret = Secret::default();
    })
    .await
    else {
        return;
    };
    let with_old_secret =
        referral_sync::web::portal::link::token(&Secret::new(LINK_SECRET), "ACME-7", T0 + DAY);
    let (status, _, _) = off
        .page(&format!("/partners/ACME-7?token={with_old_secret}"), None)
        .await;
    assert_eq!(status, 403);
}

async fn a_partner_sees_their_payout_statements_per_currency_and_no_one_elses(backend: Backend) {
    let Some(app) = console_app(backend).await else {
        return;
    };
    seed(&app).await;
    let (_, _, before) = app.page(&app.portal_path("ACME-7", 30), None).await;
    // November: eve's 3,000 USD reward, approved on Nov 20, is ACME-7's USD statement, paid the
    // same day; BETA-2's RU deal won on Nov 19 pays half of its flat 50,000 RUB up front.
    let eve = reward_of(&app, EVE_DEAL).await;
    let (status, body) = call(
        &app,
        "POST",
        &format!("/api/v1/rewards/{eve}/approve"),
        Some(ADMIN_KEY),
        Some(json!({"reason": "known partner"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let november = read_payouts(&app, "2026-11").await;
    let paid = november["statements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["referrer_code"] == "ACME-7")
        .unwrap();
    assert_eq!(
        (paid["currency"].as_str(), paid["total"].as_str()),
        (Some("USD"), Some("3000.00"))
    );
    let (status, body) = call(
        &app,
        "POST",
        &format!("/api/v1/payouts/{}/paid", paid["id"].as_str().unwrap()),
        Some(ADMIN_KEY),
        Some(json!({"reference": "WIRE-2026-11-ACME"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // December 5: one more USD line (10.50) and three RUB lines (10.50 + 11.50 + 12.50).
    app.clock.advance(15 * DAY);
    let now = T0 + 15 * DAY;
    seed_lines(&app.store, "ACME-7", "USD", 1, now - HOUR).await;
    seed_lines(&app.store, "ACME-7", "RUB", 3, now - HOUR).await;
    let december = read_payouts(&app, "2026-12").await;
    let mut hidden: Vec<String> = Vec::new();
    for s in december["statements"]
        .as_array()
        .unwrap()
        .iter()
        .chain(november["statements"].as_array().unwrap())
    {
        hidden.push(s["id"].as_str().unwrap().to_string());
        for l in s["lines"].as_array().unwrap() {
            hidden.push(l["reward_id"].as_str().unwrap().to_string());
            hidden.push(
                l["deal"]
                    .as_str()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
    }

    let (status, _, en) = app.page(&app.portal_path("ACME-7", 30), None).await;
    let (_, _, ru) = app
        .page(&format!("{}&lang=ru", app.portal_path("ACME-7", 30)), None)
        .await;
    let (_, _, beta) = app.page(&app.portal_path("BETA-2", 30), None).await;

    assert_eq!(status, 200);
    assert!(before.contains("id=\"no-payouts\"") && before.contains("No payout statements yet"));
    assert!(!en.contains("id=\"no-payouts\""));
    assert!(en.contains("<h2>Payouts</h2>") && ru.contains("<h2>Выплаты</h2>"));
    // Per currency, newest first: December's open statement, then November's paid one.
    assert_eq!(
        statement_rows(&en, "USD"),
        [
            "<td>December 2026</td><td><span class=\"tag warn\">to be paid</span></td>\
             <td class=\"num\">$10.50</td><td>Jan 30, 2027</td><td></td>",
            "<td>November 2026</td><td><span class=\"tag good\">paid out</span></td>\
             <td class=\"num\">$3,000.00</td><td>Dec 30, 2026</td>\
             <td>Nov 20, 2026, reference WIRE-2026-11-ACME</td>",
        ]
    );
    assert_eq!(
        statement_rows(&en, "RUB"),
        [
            "<td>December 2026</td><td><span class=\"tag warn\">to be paid</span></td>\
          <td class=\"num\">RUB\u{a0}34.50</td><td>Jan 30, 2027</td><td></td>"
        ]
    );
    assert_eq!(
        statement_rows(&ru, "USD"),
        [
            "<td>декабрь 2026</td><td><span class=\"tag warn\">к выплате</span></td>\
             <td class=\"num\">10,50\u{a0}$</td><td>30 января 2027\u{a0}г.</td><td></td>",
            "<td>ноябрь 2026</td><td><span class=\"tag good\">выплачено</span></td>\
             <td class=\"num\">3\u{a0}000,00\u{a0}$</td><td>30 декабря 2026\u{a0}г.</td>\
             <td>20 ноября 2026\u{a0}г., номер платежа WIRE-2026-11-ACME</td>",
        ]
    );
    assert_eq!(
        statement_rows(&ru, "RUB"),
        [
            "<td>декабрь 2026</td><td><span class=\"tag warn\">к выплате</span></td>\
          <td class=\"num\">34,50\u{a0}₽</td><td>30 января 2027\u{a0}г.</td><td></td>"
        ]
    );
    for id in &hidden {
        assert!(
            !en.contains(id.as_str()) && !ru.contains(id.as_str()),
            "statement, reward or deal id {id} shown"
        );
    }
    assert!(!en.contains("25,000") && !en.contains(ADMIN_NAME));
    assert_no_crm_ids_or_emails(&en);
    assert_no_crm_ids_or_emails(&ru);

    // BETA-2 sees its own statement (half of 50,000 RUB, net-30) and none of ACME-7's.
    assert_eq!(
        statement_rows(&beta, "RUB"),
        [
            "<td>ноябрь 2026</td><td><span class=\"tag warn\">к выплате</span></td>\
          <td class=\"num\">25\u{a0}000,00\u{a0}₽</td><td>30 декабря 2026\u{a0}г.</td><td></td>"
        ]
    );
    assert!(statement_rows(&beta, "USD").is_empty());
    for other in ["WIRE-2026-11-ACME", "34,50", "3\u{a0}000,00", "10,50"] {
        assert!(!beta.contains(other), "{other} on BETA-2's page");
    }
    assert_no_crm_ids_or_emails(&beta);
}

/// The statements of `period` as the API gathers them.
async fn read_payouts(app: &TestApp, period: &str) -> Value {
    let (status, body) = call(
        app,
        "GET",
        &format!("/api/v1/payouts?period={period}"),
        Some(READ_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The cells of each statement row in the page's `currency` table, in order.
fn statement_rows(page: &str, currency: &str) -> Vec<String> {
    let marker = format!("<table class=\"payouts\" data-currency=\"{currency}\">");
    let Some(start) = page.find(&marker) else {
        return Vec::new();
    };
    let table = &page[start..];
    let table = &table[..table.find("</table>").unwrap()];
    table
        .split("<tr class=\"statement\">")
        .skip(1)
        .map(|r| r.split("</tr>").next().unwrap().to_string())
        .collect()
}
