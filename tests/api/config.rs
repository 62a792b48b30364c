//! Configuration layering (SPEC §8), validation that names every bad key, and secret redaction.

use std::collections::BTreeMap;

use referral_sync::config::LogFormat;
use referral_sync::config::{ConfigSources, Settings};
use referral_sync::domain::stage::CanonicalStage;
use referral_sync::ingest::signature::HubSpotVersion;

use crate::support::repo_dir;

fn load(env: &[(&str, &str)], file: Option<&str>) -> Result<Settings, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let file_path = file.map(|body| {
        let p = dir.path().join("override.toml");
        std::fs::write(&p, body).unwrap();
        p
    });
    Settings::load(&ConfigSources {
        file: file_path,
        dir: Some(repo_dir().join("config")),
        env: Some(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
    })
    .map_err(|e| e.problems())
}

#[test]
fn the_shipped_defaults_are_valid_and_use_embedded_sqlite() {
    let s = load(&[], None).unwrap();

    assert_eq!(s.server.bind, "127.0.0.1:8080");
    assert_eq!(s.database.url.expose(), "sqlite://./data/referral-sync.db");
    assert!(
        s.programs.is_empty(),
        "no rewards until a program is configured"
    );
    assert_eq!(
        s.hubspot.pipelines["default"]["closedwon"],
        CanonicalStage::Won
    );
    assert_eq!(s.salesforce.stages["Closed Won"], CanonicalStage::Won);
}

#[test]
fn later_layers_win_file_then_environment_then_database_url() {
    let s = load(
        &[
            ("REFERRAL_SYNC__SERVER__BIND", "0.0.0.0:9000"),
            ("REFERRAL_SYNC__HUBSPOT__CLIENT_SECRETS", "current-secret,old-secret"),
            ("REFERRAL_SYNC__HUBSPOT__SIGNATURE_VERSIONS", "v3,v1"),
            ("DATABASE_URL", "postgres://rs:pw@db.internal:5432/rs"),
            ("UNRELATED_VARIABLE", "ignored"),
        ],
        Some("[server]\nbind = \"127.0.0.1:7000\"\npublic_base_url = \"https://hooks.example.com\"\n"),
    )
    .unwrap();

    assert_eq!(s.server.bind, "0.0.0.0:9000", "environment beats the file");
    assert_eq!(
        s.server.public_base_url, "https://hooks.example.com",
        "file beats defaults"
    );
    let secrets: Vec<&str> = s
        .hubspot
        .client_secrets
        .iter()
        .map(|s| s.expose())
        .collect();
    assert_eq!(
        secrets,
        ["current-secret", "old-secret"],
        "lists split on commas"
    );
    assert_eq!(
        s.hubspot.signature_versions,
        [HubSpotVersion::V3, HubSpotVersion::V1]
    );
    assert_eq!(
        s.database.url.expose(),
        "postgres://rs:pw@db.internal:5432/rs"
    );
}

#[test]
fn the_environment_overlay_file_is_applied_when_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_dir().join("config/default.toml"),
        dir.path().join("default.toml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("staging.toml"),
        "[telemetry]\nformat = \"json\"\n",
    )
    .unwrap();
    let sources = |env: &str| ConfigSources {
        file: None,
        dir: Some(dir.path().to_path_buf()),
        env: Some([("REFERRAL_SYNC_ENV".to_string(), env.to_string())].into()),
    };

    let staging = Settings::load(&sources("staging")).unwrap();
    let missing = Settings::load(&sources("prod")).unwrap_err().problems();

    assert_eq!(staging.telemetry.format, LogFormat::Json);
    assert!(missing[0].contains("prod.toml"), "{missing:?}");
}

#[test]
fn every_problem_is_reported_at_once_each_naming_its_key() {
    let problems = load(
        &[("REFERRAL_SYNC__TELEMETRY__FORMAT", "xml")],
        Some(
            r#"
[server]
bind = "nowhere"
[database]
url = "mysql://x"
max_connections = 4
[hubspot]
signature_versions = ["v9"]
[hubspot.pipelines.default]
closedwon = "victory"
[sources.app]
scheme = "rot13"
secrets = []
[rewards]
program_by = "nearest_market"
[programs.US]
currency = "USD"
success_stage = "victory"
reward = { kind = "flat", amount = "100" }
[misspelled]
key = 1
"#,
        ),
    )
    .unwrap_err();

    for key in [
        "server.bind",
        "database.url",
        "database.max_connections: must be at least 5",
        "telemetry.format",
        "hubspot.signature_versions",
        "hubspot.pipelines.default.closedwon",
        "sources.app.scheme",
        "sources.app.secrets",
        "rewards.program_by",
        "programs.US.success_stage",
        "misspelled",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(key)),
            "no problem names {key}: {problems:#?}"
        );
    }
}

#[test]
fn secrets_never_appear_in_debug_or_the_printed_config() {
    let s = load(
        &[(
            "REFERRAL_SYNC__HUBSPOT__ACCESS_TOKEN",
            "pat-na1-very-secret-token",
        )],
        Some(
            r#"
[database]
url = "postgres://rs:db-password-123@db:5432/rs"
[hubspot]
client_secrets = ["hubspot-client-secret-xyz"]
[sources.app]
scheme = "stripe"
secrets = ["whsec_product_secret_abc"]
"#,
        ),
    )
    .unwrap();

    let printed = s.to_redacted_toml();
    let debugged = format!("{s:?}");
    for secret in [
        "pat-na1-very-secret-token",
        "db-password-123",
        "hubspot-client-secret-xyz",
        "whsec_product_secret_abc",
    ] {
        assert!(!printed.contains(secret), "{secret} printed");
        assert!(!debugged.contains(secret), "{secret} in Debug");
    }
    assert!(
        printed.contains("postgres://rs:[redacted]@db:5432/rs"),
        "URL shown without password"
    );
    assert!(printed.contains("[redacted]"));
}

#[test]
fn the_two_market_example_is_valid() {
    let text = std::fs::read_to_string(repo_dir().join("config/example.toml")).unwrap();

    let s = load(&[], Some(&text)).unwrap();

    assert_eq!(s.programs["US"].currency, "USD");
    assert_eq!(s.programs["RU"].tiers[2].name, "ambassador");
    assert_eq!(
        s.programs["RU"].hold_days, 30,
        "omitted keys take the defaults"
    );
    assert_eq!(
        s.salesforce.stages["Id. Decision Makers"],
        CanonicalStage::Demo,
        "dotted stage names survive"
    );
    let recurring = s.programs["US"].recurring.as_ref().unwrap();
    assert_eq!(
        (
            recurring.percent.to_string(),
            recurring.months,
            recurring.cap.map(|c| c.to_string())
        ),
        ("10".to_string(), 12, Some("20000".to_string()))
    );
    assert_eq!(s.programs["US"].payout_terms_days, 30);
    assert!(s.programs["US"].payout_schedule.is_empty());
    let shares: Vec<(String, String)> = s.programs["RU"]
        .payout_schedule
        .iter()
        .map(|i| (i.at.to_string(), i.share.to_string()))
        .collect();
    assert_eq!(
        shares,
        [
            ("won".to_string(), "0.5".to_string()),
            ("hold_end".to_string(), "0.5".to_string())
        ]
    );
    assert_eq!(s.renewals.hubspot_pipelines, ["renewals"]);
}

#[test]
fn recurring_and_payout_mistakes_are_each_named_by_their_key() {
    let problems = load(
        &[],
        Some(
            r#"
[programs.US]
currency = "USD"
reward = { kind = "flat", amount = "100" }
recurring = { percent = "0", months = 0, cap = "-5", percnt = "10" }
payout_terms_days = 4000
payout_schedule = [{ at = "won", share = "0.5" }, { at = "won", share = "0.3" }, { at = "hold_end", share = "0" }]
"#,
        ),
    )
    .unwrap_err();

    for expected in [
        "programs.US.recurring.percent: must be above 0 and at most 100",
        "programs.US.recurring.months: must be between 1 and 1200",
        "programs.US.recurring.cap: must be positive",
        "programs.US.recurring.percnt: unknown key",
        "programs.US.payout_terms_days: must be at most 3650",
        "programs.US.payout_schedule[1].at: `won` appears twice (one installment per moment)",
        "programs.US.payout_schedule[2].share: must be above 0 and at most 1",
        "programs.US.payout_schedule: the shares add up to 0.8, not 1",
    ] {
        assert!(
            problems.iter().any(|p| p == expected),
            "{expected:?} not in {problems:#?}"
        );
    }

    let bad_moment = load(
        &[],
        Some("[programs.RU]\ncurrency = \"RUB\"\nreward = { kind = \"flat\", amount = \"1\" }\npayout_schedule = [{ at = \"signed\", share = \"1\" }]\n"),
    )
    .unwrap_err();
    assert_eq!(bad_moment.len(), 1, "{bad_moment:?}");
    assert!(
        bad_moment[0].starts_with("programs.RU.payout_schedule[0].at: ")
            && bad_moment[0].contains("won")
            && bad_moment[0].contains("hold_end"),
        "{bad_moment:?}"
    );
}

#[test]
fn the_salesforce_api_version_may_be_written_with_or_without_the_v() {
    for file in [
        "[salesforce]\napi_version = \"62.0\"\n",
        "[salesforce]\napi_version = \"v62.0\"\n",
    ] {
        assert!(load(&[], Some(file)).is_ok(), "{file}");
    }
    // From the environment, 62.0 arrives as a number.
    let s = load(&[("REFERRAL_SYNC__SALESFORCE__API_VERSION", "62.0")], None).unwrap();
    assert_eq!(s.salesforce.api_version, "62.0");

    let problems = load(
        &[("REFERRAL_SYNC__SALESFORCE__API_VERSION", "latest")],
        None,
    )
    .unwrap_err();
    assert_eq!(
        problems,
        ["salesforce.api_version: `latest` is not like 62.0 or v62.0"]
    );
}

#[test]
fn a_value_of_the_wrong_shape_names_its_key_and_never_its_value() {
    for (body, key) in [
        (
            "[hubspot]\nclient_secrets = \"3f6c-SECRET-VALUE-abc\"\n",
            "hubspot.client_secrets",
        ),
        (
            "[admin]\nkeys = [{ hash = 3, role = \"admin\" }]\n",
            "admin.keys[0].hash",
        ),
        (
            "[salesforce]\noutbound_token = [\"3f6c-SECRET-VALUE-abc\"]\n",
            "salesforce.outbound_token",
        ),
        (
            "[sources.app]\nscheme = \"stripe\"\nsecrets = 12345\n",
            "sources.app.secrets",
        ),
    ] {
        let problems = load(&[], Some(body)).unwrap_err();

        assert!(
            problems.iter().any(|p| p.starts_with(&format!("{key}: "))),
            "{key} not named: {problems:?}"
        );
        let all = problems.join("\n");
        assert!(!all.contains("SECRET-VALUE"), "value shown: {all}");
        assert!(!all.contains("12345"), "value shown: {all}");
    }
}

#[test]
fn a_toml_syntax_error_gives_its_position_without_quoting_the_line() {
    let problems = load(
        &[],
        Some("[hubspot]\naccess_token = \"pat-na1-SECRET-TOKEN\nsignature_versions = [\"v3\"]\n"),
    )
    .unwrap_err();

    let all = problems.join("\n");
    assert!(all.contains("not valid TOML at line 2"), "{all}");
    assert!(!all.contains("SECRET"), "the line was quoted: {all}");
}

#[test]
fn all_digit_secrets_can_be_set_from_the_environment() {
    let s = load(
        &[
            ("REFERRAL_SYNC__HUBSPOT__ACCESS_TOKEN", "0123456789"),
            ("REFERRAL_SYNC__HUBSPOT__CLIENT_SECRETS", "123456"),
            (
                "REFERRAL_SYNC__SALESFORCE__ORGANIZATION_IDS",
                "00D7F00000107XsUAI",
            ),
            (
                "REFERRAL_SYNC__SALESFORCE__OUTBOUND_TOKEN",
                "0000111122223333",
            ),
            ("REFERRAL_SYNC__SALESFORCE__CLIENT_SECRET", "1e5"),
            ("REFERRAL_SYNC__SOURCES__APP__SCHEME", "stripe"),
            ("REFERRAL_SYNC__SOURCES__APP__SECRETS", "000111,true"),
            ("REFERRAL_SYNC__SERVER__WORKERS", "3"),
        ],
        None,
    )
    .unwrap();

    assert_eq!(s.hubspot.access_token.expose(), "0123456789");
    let secrets: Vec<&str> = s
        .hubspot
        .client_secrets
        .iter()
        .map(|s| s.expose())
        .collect();
    assert_eq!(secrets, ["123456"]);
    assert_eq!(s.salesforce.outbound_token.expose(), "0000111122223333");
    assert_eq!(s.salesforce.client_secret.expose(), "1e5");
    let source: Vec<&str> = s.sources["app"]
        .secrets
        .iter()
        .map(|s| s.expose())
        .collect();
    assert_eq!(source, ["000111", "true"]);
    assert_eq!(s.server.workers, 3, "other numbers are still numbers");
}

#[test]
fn console_and_portal_keys_are_checked_and_the_link_secret_is_never_shown() {
    let problems = load(
        &[],
        Some(
            "[console]\nsession_minutes = 1\nhubspot_app_url = \"app.hubspot.com\"\n\
             salesforce_app_url = \"ftp://x\"\n\
             [portal]\nlink_secret = \"short-portal-secret\"\nbase_url = \"partners.example.com\"\nlink_days = 0\n",
        ),
    )
    .unwrap_err();
    let secret = "0123456789abcdef0123456789abcdef-portal";
    let ok = load(
        &[("REFERRAL_SYNC__PORTAL__LINK_SECRET", secret)],
        Some("[portal]\nbase_url = \"https://partners.example.com\"\n"),
    )
    .unwrap();

    for key in [
        "console.session_minutes",
        "console.hubspot_app_url",
        "console.salesforce_app_url",
        "portal.link_secret",
        "portal.base_url",
        "portal.link_days",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(key)),
            "{key} not named in {problems:?}"
        );
    }
    assert!(!problems.join("\n").contains("short-portal-secret"));
    assert_eq!(ok.portal.link_secret.expose(), secret);
    assert_eq!(ok.portal_base_url(), Some("https://partners.example.com"));
    assert!(!ok.to_redacted_toml().contains(secret) && !format!("{ok:?}").contains(secret));
    let defaults = load(&[], None).unwrap();
    assert!(
        defaults.portal.link_secret.is_empty(),
        "the portal is off until a secret is set"
    );
    assert_eq!(defaults.portal_base_url(), None);
}

#[test]
fn channels_and_moments_are_checked_naming_each_bad_key() {
    let problems = load(
        &[],
        Some(
            r#"
[channels]
market_by_pipeline = { default = "=US" }
market_by_currency = { DOLLARS = "US", RUB = "RU" }
[channels.hubspot_sources]
ORGANIC_SEARCH = "referral"
[moments]
nps_min = 11
"#,
        ),
    )
    .unwrap_err();
    let unknown_channel = load(
        &[],
        Some("[channels.salesforce_sources]\n\"Web\" = \"organic\"\n"),
    )
    .unwrap_err();
    let kinds = load(&[("REFERRAL_SYNC__MOMENTS__KINDS", "nps,renewal")], None).unwrap();

    for key in [
        "channels.market_by_pipeline.default:",
        "channels.market_by_currency: `DOLLARS`",
        "channels.hubspot_sources.\"ORGANIC_SEARCH\": `referral`",
        "moments.nps_min:",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(key)),
            "no problem names {key}: {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(
        unknown_channel[0].starts_with("channels.salesforce_sources.Web")
            && unknown_channel[0].contains("inbound"),
        "{unknown_channel:?}"
    );
    use referral_sync::domain::moment::MomentKind;
    assert_eq!(kinds.moments.kinds, [MomentKind::Nps, MomentKind::Renewal]);
    assert!(!kinds.moments.marks(MomentKind::Usage));
}
