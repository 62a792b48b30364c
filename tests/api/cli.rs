//! The real binary: `check-config` and `healthcheck` as an operator or Docker runs them.

use referral_sync::domain::Crm;
use referral_sync::ingest::signature::{HmacEncoding, ProductScheme};
use std::process::Command;

use crate::support::{repo_dir, spawn_app, Backend};

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_referral-sync"));
    cmd.current_dir(repo_dir())
        .env_remove("DATABASE_URL")
        .env_remove("REFERRAL_SYNC_ENV")
        .env("NO_COLOR", "1");
    cmd
}

#[test]
fn check_config_exits_non_zero_and_names_each_bad_key_without_leaking_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        r#"
[server]
bind = "not-an-address"
[database]
url = "mysql://root:db-secret-999@db/x"
[salesforce]
organization_ids = ["00D123"]
outbound_token = "short"
[admin]
keys = [{ hash = "abc", role = "owner" }]
"#,
    )
    .unwrap();

    let out = binary()
        .arg("--config")
        .arg(&file)
        .arg("check-config")
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    for key in [
        "server.bind",
        "database.url",
        "salesforce.organization_ids",
        "salesforce.outbound_token",
        "admin.keys[0].hash",
        "admin.keys[0].role",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(key)),
            "{key} not named in:\n{stderr}"
        );
    }
    let all = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        !all.contains("db-secret-999") && !all.contains("short\""),
        "secret leaked:\n{all}"
    );
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let out = binary()
        .arg("check-config")
        .env(
            "REFERRAL_SYNC__HUBSPOT__ACCESS_TOKEN",
            "pat-na1-abcdef-secret",
        )
        .output()
        .unwrap();

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("bind = \"127.0.0.1:8080\""));
    assert!(stdout.contains("access_token = \"[redacted]\""));
    assert!(!stdout.contains("pat-na1-abcdef-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_succeeds_against_a_ready_server_and_fails_without_one() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let url = app.address.clone();

    let ok = tokio::task::spawn_blocking(move || {
        binary()
            .args(["healthcheck", "--url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let port = app.port;
    app.stop().await.unwrap();
    let down = tokio::task::spawn_blocking(move || {
        binary()
            .args(["healthcheck", "--url", &format!("http://127.0.0.1:{port}")])
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!down.status.success());
}

#[test]
fn serve_creates_the_sqlite_folder_and_file_on_first_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested/folder/rs.db");

    // `migrate` exercises the same connect path as `serve`, without a listener to stop.
    let out = binary()
        .arg("migrate")
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .output()
        .unwrap();

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.is_file());
}

#[test]
fn demo_plays_the_whole_story_offline_and_exits_zero() {
    let out = binary().arg("demo").output().unwrap();

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "restored in HubSpot: referral_source=link",
        "reward referrer: pending 3000.00 USD (percent_of_deal, tier bronze)",
        "reward referee: pending 500.00 USD (credit)",
        "tier silver",
        "reward referrer: reversed",
        "Referral_Reward__e",
        "HubSpot note: Referral reward eligible",
        "Funnel",
        "RU      code",
        "recurring eligible 600.00 USD (invoice:in_nw_1, tier silver)",
        "recurring eligible 2250.00 USD (deal 205, tier silver)",
        "adjustment eligible -150.00 USD (refund:re_nw_2, tier silver)",
        "Payout statements for 2027-09",
        "IVAN-1 RUB 50000.00 — open, due 2027-10-30",
        "25000.00  reward (won share)",
        "ACME-7 USD 13400.00 — open, due 2027-10-30",
        "-150.00  adjustment (refund:re_nw_2)",
        "Totals: 50000.00 RUB; 13400.00 USD",
        "marks the statement paid (reference WIRE-ACME-7)",
        "HubSpot note: Referral recurring reward eligible on deal 201",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("WARN"),
        "a clean run warns about nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_prints_the_funnel_as_a_table_csv_or_json() {
    let app = crate::support::spawn_app_with(
        Backend::Sqlite,
        Default::default(),
        crate::support::senders::configure,
    )
    .await
    .unwrap();
    app.signup(serde_json::json!({"id": "e1", "type": "signup.created", "occurred_at": "2026-11-20T09:00:00Z",
        "data": {"email": "ana@northwind.io", "referral_code": "ACME-7", "source": "link", "market": "US"}}))
        .await;
    app.process().await;
    let url = app.settings.database.url.expose().to_string();
    let run = move |args: &'static [&'static str]| {
        let url = url.clone();
        move || {
            binary()
                .arg("report")
                .args(args)
                .env("DATABASE_URL", url)
                .output()
                .unwrap()
        }
    };

    let table = tokio::task::spawn_blocking(run(&[])).await.unwrap();
    let csv = tokio::task::spawn_blocking(run(&["--format", "csv"]))
        .await
        .unwrap();
    let json = tokio::task::spawn_blocking(run(&["--format", "json", "--market", "us"]))
        .await
        .unwrap();
    let bad = tokio::task::spawn_blocking(run(&["--from", "yesterday"]))
        .await
        .unwrap();
    let by_referrer = tokio::task::spawn_blocking(run(&["--by", "referrer", "--format", "json"]))
        .await
        .unwrap();
    let by_referrer_table = tokio::task::spawn_blocking(run(&["--by", "referrer"]))
        .await
        .unwrap();
    let by_nothing = tokio::task::spawn_blocking(run(&["--by", "market"]))
        .await
        .unwrap();
    let compared = tokio::task::spawn_blocking(run(&["--compare", "--format", "json"]))
        .await
        .unwrap();
    let compared_csv = tokio::task::spawn_blocking(run(&["--compare", "--format", "csv"]))
        .await
        .unwrap();
    let compared_table = tokio::task::spawn_blocking(run(&["--compare"]))
        .await
        .unwrap();
    let both = tokio::task::spawn_blocking(run(&["--compare", "--by", "referrer"]))
        .await
        .unwrap();

    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(String::from_utf8_lossy(&table.stdout).contains("US      link"));
    assert!(
        String::from_utf8_lossy(&csv.stdout)
            .lines()
            .next()
            .unwrap()
            .contains(','),
        "a CSV header"
    );
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["totals"]["referrals"], 1);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--from"));
    let cards: serde_json::Value = serde_json::from_slice(&by_referrer.stdout).unwrap();
    assert_eq!(cards["referrers"][0]["referrer_code"], "ACME-7");
    assert_eq!(cards["referrers"][0]["referrals"], 1);
    assert!(String::from_utf8_lossy(&by_referrer_table.stdout).starts_with("Referrer  Name"));
    assert!(!by_nothing.status.success(), "only --by referrer exists");
    let compared: serde_json::Value = serde_json::from_slice(&compared.stdout).unwrap();
    assert_eq!(compared["totals"]["referrals"], 1);
    assert_eq!(compared["comparison"]["totals"][0]["channel"], "referral");
    assert!(
        String::from_utf8_lossy(&compared_csv.stdout).starts_with("market,channel,deals_created,")
    );
    assert!(String::from_utf8_lossy(&compared_table.stdout).contains("Referred vs non-referred"));
    assert!(
        !both.status.success(),
        "--compare and --by referrer are different reports"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_prints_headers_the_server_accepts_for_each_scheme() {
    use referral_sync::config::{Secret, SourceSettings};
    let app = crate::support::spawn_app_with(Backend::Sqlite, Default::default(), |s| {
        s.hubspot.client_secrets = vec![Secret::new("cli-hubspot-secret")];
        s.sources.insert(
            "app".into(),
            SourceSettings {
                scheme: ProductScheme::StandardWebhooks,
                secrets: vec![Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
                header: None,
                encoding: HmacEncoding::Hex,
            },
        );
    })
    .await
    .unwrap();
    // The CLI signs with the real time; the server's fake clock must agree.
    app.clock.set(chrono::Utc::now().timestamp_millis());
    let dir = tempfile::tempdir().unwrap();
    let hubspot_body = dir.path().join("hubspot.json");
    std::fs::write(&hubspot_body, r#"[{"objectId":1,"eventId":1,"subscriptionId":1,"portalId":1,"occurredAt":1,"subscriptionType":"contact.creation"}]"#).unwrap();
    let signup_body = dir.path().join("signup.json");
    std::fs::write(&signup_body, r#"{"id":"evt_cli","type":"signup.created","occurred_at":"2026-11-20T10:00:00Z","data":{"email":"ana@northwind.io","referral_code":"ACME-7"}}"#).unwrap();
    let config = dir.path().join("cli.toml");
    std::fs::write(
        &config,
        "[hubspot]\nclient_secrets = [\"cli-hubspot-secret\"]\n[sources.app]\nscheme = \"standard-webhooks\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n",
    )
    .unwrap();

    for (source, body, path, expected) in [
        ("hubspot", &hubspot_body, "/webhooks/hubspot", 204),
        ("app", &signup_body, "/webhooks/signup/app", 202),
    ] {
        let url = app.url(path);
        let args = [
            "--config",
            config.to_str().unwrap(),
            "sign",
            "--source",
            source,
            "--url",
            &url,
            "--body",
            body.to_str().unwrap(),
        ];
        let out = binary().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut request = app.client.post(&url).body(std::fs::read(body).unwrap());
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let (name, value) = line.split_once(": ").expect("header line");
            request = request.header(name, value);
        }

        let response = request.send().await.unwrap();

        assert_eq!(
            response.status(),
            expected,
            "{source}: {}",
            response.text().await.unwrap()
        );
    }
    assert_eq!(app.store.count_inbox(None).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_processes_parked_events_once_the_mapping_is_fixed() {
    let app = crate::support::spawn_app_with(
        Backend::Sqlite,
        Default::default(),
        crate::support::senders::configure,
    )
    .await
    .unwrap();
    let fields: &[(&str, Option<&str>)] = &[
        ("Id", Some("0067F00000QqqqqQAA")),
        ("StageName", Some("Value Proposition")),
    ];
    app.salesforce(&[("04l0000000000QQAAA", "Opportunity", fields)])
        .await;
    app.process().await;
    assert_eq!(
        app.store.list_inbox(None, 1).await.unwrap()[0]
            .status
            .as_str(),
        "unmapped"
    );
    let dir = tempfile::tempdir().unwrap();
    let fixed = dir.path().join("fixed.toml");
    std::fs::write(
        &fixed,
        "[salesforce.stages]\n\"Value Proposition\" = \"demo\"\n",
    )
    .unwrap();
    let url = app.settings.database.url.expose().to_string();

    let out = tokio::task::spawn_blocking(move || {
        binary()
            .arg("--config")
            .arg(&fixed)
            .arg("replay")
            .env("DATABASE_URL", url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("re-queued 1 inbox event(s); processed 1")
    );
    let key = referral_sync::store::RecordKey {
        crm: Crm::Salesforce,
        object_type: "Opportunity".into(),
        object_id: "0067F00000QqqqqQAA".into(),
    };
    assert_eq!(
        app.store
            .crm_record(&key)
            .await
            .unwrap()
            .unwrap()
            .stage
            .as_deref(),
        Some("demo")
    );
}

#[test]
fn partners_import_loads_a_csv_and_refuses_bad_rows_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/p.db", dir.path().display());
    let good = dir.path().join("partners.csv");
    std::fs::write(
        &good,
        "code,name,email,company_domain,market,kind\nACME-7,\"Acme, Inc.\",Partners@Acme.com,ACME.com,us,partner\nZED-1,Zed,,,RU,creator\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "code,name,kind\nOK-1,Ok,partner\nBAD-2,Bad,reseller\n",
    )
    .unwrap();

    let ok = binary()
        .args(["partners", "import"])
        .arg(&good)
        .env("DATABASE_URL", &db)
        .output()
        .unwrap();
    let again = binary()
        .args(["partners", "import"])
        .arg(&good)
        .env("DATABASE_URL", &db)
        .output()
        .unwrap();
    let refused = binary()
        .args(["partners", "import"])
        .arg(&bad)
        .env("DATABASE_URL", &db)
        .output()
        .unwrap();

    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(again.status.success(), "importing twice is harmless");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("reseller"),
        "{stderr}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut settings = crate::support::default_settings();
        settings.database.url = referral_sync::config::Secret::new(db.clone());
        let store = referral_sync::store::Store::connect(&settings.database)
            .await
            .unwrap();
        let acme = store.referrer_by_code("ACME-7").await.unwrap().unwrap();
        assert_eq!(acme.facts.name.as_deref(), Some("Acme, Inc."));
        assert_eq!(acme.facts.email.as_deref(), Some("partners@acme.com"));
        assert_eq!(
            (
                acme.facts.company_domain.as_deref(),
                acme.facts.market.as_deref()
            ),
            (Some("acme.com"), Some("US"))
        );
        assert_eq!(
            store
                .referrer_by_code("ZED-1")
                .await
                .unwrap()
                .unwrap()
                .facts
                .kind,
            "creator"
        );
        assert!(
            store.referrer_by_code("OK-1").await.unwrap().is_none(),
            "a bad file imports nothing"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_even_at_debug_level() {
    use referral_sync::ingest::signature::{sign_hubspot, HubSpotVersion};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secrets = [
        "hubspot-secret-SHOULD-NOT-LEAK",
        "pat-na1-TOKEN-SHOULD-NOT-LEAK",
        "sf-outbound-SHOULD-NOT-LEAK-123",
        "whsec_U0hPVUxELU5PVC1MRUFLLXNvdXJjZS1zZWNyZXQ=",
        "db-password-SHOULD-NOT-LEAK",
        "portal-link-secret-SHOULD-NOT-LEAK-0123",
        "console-key-SHOULD-NOT-LEAK",
    ];
    let log = dir.path().join("service.log");
    let mut child = binary()
        .arg("serve")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/s.db", dir.path().display()),
        )
        .env("REFERRAL_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("REFERRAL_SYNC__TELEMETRY__LEVEL", "debug")
        .env("REFERRAL_SYNC__HUBSPOT__CLIENT_SECRETS", secrets[0])
        .env("REFERRAL_SYNC__HUBSPOT__ACCESS_TOKEN", secrets[1])
        .env(
            "REFERRAL_SYNC__SALESFORCE__ORGANIZATION_IDS",
            "00D7F00000107XsUAI",
        )
        .env("REFERRAL_SYNC__SALESFORCE__OUTBOUND_TOKEN", secrets[2])
        .env("REFERRAL_SYNC__SOURCES__APP__SCHEME", "standard-webhooks")
        .env("REFERRAL_SYNC__SOURCES__APP__SECRETS", secrets[3])
        .env("REFERRAL_SYNC__PORTAL__LINK_SECRET", secrets[5])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("service.err")).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "service did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Good and bad requests that touch every secret, including the token in the query string.
    let body = r#"[{"objectId":1,"eventId":1,"subscriptionId":1,"portalId":1,"occurredAt":1,"subscriptionType":"contact.creation"}]"#;
    let now = chrono::Utc::now().timestamp_millis();
    let url = format!("{base}/webhooks/hubspot");
    let mut good = client.post(&url);
    for (k, v) in sign_hubspot(
        HubSpotVersion::V3,
        secrets[0],
        "POST",
        &url,
        body.as_bytes(),
        now,
    ) {
        good = good.header(k, v);
    }
    assert_eq!(good.body(body).send().await.unwrap().status(), 204);
    client
        .post(&url)
        .header("x-hubspot-signature-v3", "forged")
        .header("x-hubspot-request-timestamp", now.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    client
        .post(format!("{base}/webhooks/salesforce?token={}", secrets[2]))
        .body("<not-xml")
        .send()
        .await
        .unwrap();
    client
        .post(format!("{base}/webhooks/salesforce?token=wrong"))
        .body("<x/>")
        .send()
        .await
        .unwrap();
    client
        .post(format!("{base}/webhooks/signup/app"))
        .body("{}")
        .send()
        .await
        .unwrap();
    client
        .get(format!("{base}/api/v1/rewards"))
        .bearer_auth(secrets[1])
        .send()
        .await
        .unwrap();
    let portal_token = referral_sync::web::portal::link::token(
        &referral_sync::config::Secret::new(secrets[5]),
        "ACME-7",
        now + 86_400_000,
    );
    for token in [portal_token.as_str(), "1.forged"] {
        client
            .get(format!("{base}/partners/ACME-7?token={token}"))
            .send()
            .await
            .unwrap();
    }
    client
        .post(format!("{base}/console/sign-in"))
        .form(&[("csrf", "x"), ("key", secrets[6])])
        .send()
        .await
        .unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    let logs = format!(
        "{}{}",
        std::fs::read_to_string(&log).unwrap(),
        std::fs::read_to_string(dir.path().join("service.err")).unwrap()
    );
    assert!(
        logs.contains("webhook rejected"),
        "the run was logged at all:\n{logs}"
    );
    for secret in secrets {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
    assert!(!logs.contains("token="), "query strings are not logged");
    assert!(!logs.contains(&portal_token), "portal links are not logged");
}

/// Runs `serve` with `env`, lets `drive` send requests to its base URL, stops it with SIGTERM,
/// and returns everything it logged.
async fn serve_and_collect_logs<F, Fut>(env: &[(&str, String)], drive: F) -> String
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (out, err) = (dir.path().join("out.log"), dir.path().join("err.log"));
    let mut cmd = binary();
    cmd.arg("serve")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/s.db", dir.path().display()),
        )
        .env("REFERRAL_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"))
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "service did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drive(base).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    format!(
        "{}{}",
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&err).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_text_cannot_forge_log_lines_or_flood_them_in_either_format() {
    let forged =
        "x%0A2026-11-20T10:00:00.000000Z%20%20INFO%20referral_sync:%20FORGED%1B[2J%E2%80%AE";
    let huge = format!("/webhooks/signup/{}", "A".repeat(60_000));
    for format in ["pretty", "json"] {
        let (forged, huge) = (forged.to_string(), huge.clone());
        let logs = serve_and_collect_logs(
            &[("REFERRAL_SYNC__TELEMETRY__FORMAT", format.to_string())],
            |base| async move {
                let client = reqwest::Client::new();
                for path in [format!("/webhooks/signup/{forged}"), huge] {
                    let r = client
                        .post(format!("{base}{path}"))
                        .body("{}")
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 404, "{format}");
                }
            },
        )
        .await;

        assert!(
            logs.contains("webhook rejected"),
            "{format}: the refusals were logged:\n{logs}"
        );
        for line in logs.lines() {
            assert!(
                !line.trim_start().contains("FORGED") || line.contains("webhook rejected"),
                "{format}: a forged line of its own: {line}"
            );
            assert!(!line.starts_with("2026-11-20T10:00:00"), "{format}: {line}");
            assert!(
                line.len() < 4_000,
                "{format}: a {} byte line: {}",
                line.len(),
                &line[..line.len().min(3000)]
            );
            if format == "json" {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            }
        }
        assert!(!logs.contains('\u{1b}'), "{format}: a terminal escape");
        assert!(!logs.contains('\u{202e}'), "{format}: a direction override");
        assert!(
            logs.contains("FORGED"),
            "{format}: the text is there, escaped"
        );
    }
}

#[test]
fn check_config_and_serve_name_the_key_of_a_misshapen_secret_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shape.toml");
    std::fs::write(&file, "[hubspot]\nclient_secrets = \"3f6c-SECRET-VALUE\"\n").unwrap();

    for command in ["check-config", "serve"] {
        let out = binary()
            .arg("--config")
            .arg(&file)
            .arg(command)
            .output()
            .unwrap();

        assert!(!out.status.success(), "{command}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(all.contains("hubspot.client_secrets"), "{command}: {all}");
        assert!(!all.contains("SECRET-VALUE"), "{command}: {all}");
    }
}

/// A stand-in for curl that records its arguments (one per line) and its standard input.
fn fake_curl(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("curl");
    std::fs::write(
        &script,
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> \"$RECORD/args\"; done\ncat > \"$RECORD/stdin\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Runs `sign … --curl` (with `stdin` as the body when given), then the printed command in `sh`
/// with the fake curl first on PATH; returns curl's arguments and standard input.
fn sign_and_run(
    dir: &std::path::Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> (Vec<String>, Vec<u8>) {
    use std::io::Write;
    let record = dir.join("record");
    let _ = std::fs::remove_dir_all(&record);
    std::fs::create_dir_all(&record).unwrap();
    let mut sign = binary()
        .arg("sign")
        .args(args)
        .arg("--curl")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sign.stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default())
        .unwrap();
    let printed = sign.wait_with_output().unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let path = format!(
        "{}:{}",
        fake_curl(dir).display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ran = Command::new("sh")
        .arg("-c")
        .arg(String::from_utf8(printed.stdout).unwrap())
        .current_dir(dir)
        .env("PATH", path)
        .env("RECORD", &record)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let args = std::fs::read_to_string(record.join("args")).unwrap();
    (
        args.lines().map(String::from).collect(),
        std::fs::read(record.join("stdin")).unwrap(),
    )
}

#[test]
fn sign_curl_output_runs_no_injected_command_and_sends_the_signed_bytes() {
    use referral_sync::ingest::signature::{
        verify_hubspot, verify_standard_webhooks, HubSpotRequest, HubSpotVersion,
    };
    let dir = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:9/webhooks/hubspot?x='$(touch PWNED1)'";
    let body_file = dir.path().join("b'$(touch PWNED2)'.json");
    std::fs::write(&body_file, br#"[{"objectId":1}]"#).unwrap();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    let (by_file, _) = sign_and_run(
        dir.path(),
        &[
            "--scheme",
            "standard-webhooks",
            "--secret",
            secret,
            "--url",
            url,
            "--id",
            "msg'; touch PWNED3; echo '",
            "--body",
            body_file.to_str().unwrap(),
        ],
        None,
    );
    let binary_body = b"[{\"name\":\"\xff\xfe caf\xe9\"}]\x00end";
    let (piped, sent) = sign_and_run(
        dir.path(),
        &["--source", "hubspot", "--secret", "hs-secret", "--url", url],
        Some(binary_body),
    );

    for marker in ["PWNED1", "PWNED2", "PWNED3"] {
        assert!(!dir.path().join(marker).exists(), "{marker}: a command ran");
    }
    assert!(by_file.contains(&url.to_string()), "{by_file:?}");
    assert!(
        by_file.contains(&"webhook-id: msg'; touch PWNED3; echo '".to_string()),
        "{by_file:?}"
    );
    assert!(
        by_file.contains(&format!("@{}", body_file.display())),
        "{by_file:?}"
    );
    let headers: Vec<(String, String)> = by_file
        .iter()
        .filter_map(|a| {
            a.split_once(": ")
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let now = chrono::Utc::now().timestamp();
    assert!(verify_standard_webhooks(
        &headers,
        &std::fs::read(&body_file).unwrap(),
        &[secret],
        300,
        now
    )
    .is_ok());

    assert_eq!(sent, binary_body, "curl got the exact bytes");
    let headers: Vec<(String, String)> = piped
        .iter()
        .filter_map(|a| {
            a.split_once(": ")
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let request = HubSpotRequest {
        method: "POST",
        uri: url,
        body: &sent,
        headers: &headers,
    };
    assert_eq!(
        verify_hubspot(
            &request,
            &["hs-secret"],
            &[HubSpotVersion::V3],
            300_000,
            now * 1000
        ),
        Ok(HubSpotVersion::V3),
        "the bytes sent are the bytes signed"
    );
}

#[test]
fn check_config_into_a_closed_pipe_ends_quietly() {
    let mut child = binary()
        .arg("check-config")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before anything is written, as `| head -1` does after its line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}

#[test]
fn demo_piped_into_head_ends_quietly_and_removes_its_temporary_folder() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = binary()
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        lines.next().unwrap().unwrap();
    }
    drop(lines);
    let out = child.wait_with_output().unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_csv_neutralises_cells_a_spreadsheet_would_run() {
    let app = crate::support::spawn_app(Backend::Sqlite).await.unwrap();
    // A market stored before markets were validated (or typed into the database by hand).
    let mut tx = app.store.begin().await.unwrap();
    let attribution = referral_sync::store::Attribution {
        referrer_code: None,
        source: Some("@SUM(1+1)".into()),
        market: Some("=HYPERLINK(\"http://x\")".into()),
        first_touch_at: crate::support::T0,
    };
    tx.insert_referral("ana@northwind.io", &attribution, crate::support::T0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let url = app.settings.database.url.expose().to_string();

    let out = tokio::task::spawn_blocking(move || {
        binary()
            .args(["report", "--format", "csv"])
            .env("DATABASE_URL", url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    // The market's row, then its source row.
    let row = csv.lines().nth(2).expect("a source row");
    assert!(
        row.starts_with("\"'=HYPERLINK(\"\"http://x\"\")\",'@SUM(1+1),"),
        "{csv}"
    );
}

/// The Dockerfile builds dependencies in a layer of their own from stub sources: every bench the
/// manifest declares needs a stub there, or the image does not build.
#[test]
fn the_dockerfile_stubs_every_bench_the_manifest_declares() {
    let manifest = std::fs::read_to_string(crate::support::repo_dir().join("Cargo.toml")).unwrap();
    let dockerfile =
        std::fs::read_to_string(crate::support::repo_dir().join("Dockerfile")).unwrap();
    let stubbed = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("&& for b in "))
        .and_then(|l| l.split_once("; do"))
        .map(|(names, _)| names.split_whitespace().collect::<Vec<_>>())
        .expect("the Dockerfile's bench stub loop");
    let mut lines = manifest.lines();
    let mut declared = Vec::new();
    while let Some(line) = lines.next() {
        if line.trim() == "[[bench]]" {
            let name = lines
                .next()
                .and_then(|l| l.split('"').nth(1))
                .expect("name");
            declared.push(name);
        }
    }
    declared.sort_unstable();
    let mut stubbed = stubbed;
    stubbed.sort_unstable();
    assert_eq!(stubbed, declared);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_prints_a_months_statements_as_a_table_csv_or_json() {
    let app = crate::support::spawn_app_with(Backend::Sqlite, Default::default(), |s| {
        crate::rewards::configure(s);
        s.programs.get_mut("US").unwrap().hold_days = 0;
    })
    .await
    .unwrap();
    let t0 = crate::support::T0;
    let day = referral_sync::clock::DAY;
    crate::rewards::referred_deal(&app, "ana@northwind.io", 101, 201, "40000").await;
    app.clock.set(t0 + 3 * day);
    crate::rewards::stage(&app, 1, 201, "closedwon", t0 + 2 * day).await;
    let url = app.settings.database.url.expose().to_string();
    let run = move |args: &'static [&'static str]| {
        let url = url.clone();
        move || {
            binary()
                .arg("payouts")
                .args(args)
                .env("DATABASE_URL", url)
                .output()
                .unwrap()
        }
    };

    let table = tokio::task::spawn_blocking(run(&["--period", "2026-11"]))
        .await
        .unwrap();
    let csv = tokio::task::spawn_blocking(run(&["--period", "2026-11", "--format", "csv"]))
        .await
        .unwrap();
    let json = tokio::task::spawn_blocking(run(&[
        "--period",
        "2026-11",
        "--format",
        "json",
        "--currency",
        "usd",
    ]))
    .await
    .unwrap();
    let bad = tokio::task::spawn_blocking(run(&["--period", "2026-13"]))
        .await
        .unwrap();

    let table_text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(
        table_text.contains("ACME-7 USD 3000.00 — open, due 2026-12-30"),
        "{table_text}"
    );
    assert!(table_text.contains("Totals: 3000.00 USD"), "{table_text}");
    let csv_text = String::from_utf8_lossy(&csv.stdout);
    let rows: Vec<&str> = csv_text.lines().collect();
    assert_eq!(rows.len(), 2, "a header and one line: {csv_text}");
    assert!(rows[0].starts_with("statement_id,period,referrer_code,currency,status"));
    assert!(
        rows[1].contains(",2026-11,ACME-7,USD,open,2026-12-30,,3000.00,"),
        "{csv_text}"
    );
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["totals"], serde_json::json!({"USD": "3000.00"}));
    assert_eq!(parsed["statements"][0]["lines"][0]["kind"], "reward");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--period"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_link_prints_a_link_the_portal_opens_and_names_what_is_missing() {
    use crate::support::console::{console_app, seed, LINK_SECRET};
    let app = console_app(Backend::Sqlite).await.unwrap();
    seed(&app).await;
    // The command signs with the system clock; the portal checks with the app's.
    app.clock.set(chrono::Utc::now().timestamp_millis());
    let url = app.settings.database.url.expose().to_string();
    let run = move |args: &'static [&'static str], secret: &'static str| {
        let url = url.clone();
        move || {
            binary()
                .args(["partners", "link"])
                .args(args)
                .env("DATABASE_URL", url)
                .env("REFERRAL_SYNC__PORTAL__LINK_SECRET", secret)
                .env(
                    "REFERRAL_SYNC__SERVER__PUBLIC_BASE_URL",
                    "https://partners.example.com",
                )
                .output()
                .unwrap()
        }
    };

    let week = tokio::task::spawn_blocking(run(&["ACME-7", "--days", "7"], LINK_SECRET))
        .await
        .unwrap();
    let default = tokio::task::spawn_blocking(run(&["BETA-2"], LINK_SECRET))
        .await
        .unwrap();
    let no_secret = tokio::task::spawn_blocking(run(&["ACME-7"], ""))
        .await
        .unwrap();
    let unknown = tokio::task::spawn_blocking(run(&["NOPE-1"], LINK_SECRET))
        .await
        .unwrap();
    let too_long = tokio::task::spawn_blocking(run(&["ACME-7", "--days", "400"], LINK_SECRET))
        .await
        .unwrap();

    assert!(
        week.status.success(),
        "{}",
        String::from_utf8_lossy(&week.stderr)
    );
    let link = String::from_utf8(week.stdout).unwrap().trim().to_string();
    let path = link
        .strip_prefix("https://partners.example.com")
        .expect("built on server.public_base_url");
    assert!(path.starts_with("/partners/ACME-7?token="), "{link}");
    let (opened, _, page) = app.page(path, None).await;
    assert_eq!(opened, 200);
    assert!(page.contains("Acme Partners"));
    app.clock.advance(7 * referral_sync::clock::DAY);
    let (expired, _, _) = app.page(path, None).await;
    assert_eq!(expired, 403, "--days 7 means seven days");
    let default = String::from_utf8(default.stdout).unwrap();
    let token = default.trim().split("token=").nth(1).unwrap();
    let expires: i64 = token.split('.').next().unwrap().parse().unwrap();
    let days = (expires * 1000 - chrono::Utc::now().timestamp_millis()) as f64 / 86_400_000.0;
    assert!(
        (89.9..=90.0).contains(&days),
        "portal.link_days by default: {days}"
    );
    assert!(!no_secret.status.success());
    assert!(String::from_utf8_lossy(&no_secret.stderr).contains("portal.link_secret"));
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no referrer with code NOPE-1"));
    assert!(!too_long.status.success());
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("1 to 366 days"));
}
