//! The real binary: `check-config` and `healthcheck` as an operator or Docker runs them.

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
fn unimplemented_commands_say_so_and_fail() {
    let out = binary()
        .arg("demo")
        .env("DATABASE_URL", "sqlite::memory:")
        .output()
        .unwrap();

    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not implemented yet"));
}
