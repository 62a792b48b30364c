//! A real browser for the page tests: Debian's Chromium, headless, driven through its
//! chromedriver (W3C WebDriver) with thirtyfour. [`Browser::start`] returns `None` after printing
//! "skipped: …" when either binary is missing, unless `REQUIRE_BROWSER=1`, which makes that a
//! failure (as `REQUIRE_POSTGRES` does for PostgreSQL). Each browser has a fresh profile folder
//! and its own chromedriver, stopped when the browser is closed or dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thirtyfour::prelude::*;

/// How long a page may take to show what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub struct Browser {
    pub client: WebDriver,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

/// The chromedriver this test started, stopped when dropped (Chromium exits with its session).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

impl Browser {
    /// Chromium (`CHROMIUM`, default /usr/bin/chromium) through chromedriver (`CHROMEDRIVER`,
    /// default /usr/bin/chromedriver), with a viewport of `width` × `height`.
    pub async fn start(width: u32, height: u32) -> Option<Browser> {
        let chromium = binary("CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
        let missing: Vec<String> = [&chromium, &chromedriver]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            let reason = format!(
                "{} not installed (apt-get install chromium chromium-driver)",
                missing.join(" and ")
            );
            if std::env::var("REQUIRE_BROWSER").is_ok_and(|v| v.trim() == "1") {
                panic!("a browser is required (REQUIRE_BROWSER=1) but {reason}");
            }
            eprintln!("skipped: Chromium not available ({reason})");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Driver(
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        let profile = tempfile::tempdir().expect("profile folder");
        let browser = Browser {
            client: connect(&chromium, port, profile.path(), width, height).await,
            _driver: driver,
            _profile: profile,
        };
        browser
            .client
            .set_window_rect(0, 0, width, height)
            .await
            .expect("window size");
        Some(browser)
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The element `css` once it is on the page.
    pub async fn find(&self, css: &str) -> WebElement {
        self.client
            .query(By::Css(css))
            .wait(PATIENCE, Duration::from_millis(50))
            .first()
            .await
            .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
    }

    /// Whether `css` is on the page now (no waiting).
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(By::Css(css))
            .await
            .expect("find elements")
            .is_empty()
    }

    /// The text of `css` once it is on the page.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    /// Wait until the current URL satisfies `ready`.
    pub async fn wait_for_url(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let url = self.client.current_url().await.expect("current URL");
            if ready(url.as_str()) {
                return url.to_string();
            }
            assert!(Instant::now() < deadline, "the page stayed at {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's HTML as the browser has it.
    pub async fn source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// Every resource the page loaded (stylesheets, images, scripts, fonts), as the browser's
    /// own performance timeline lists them, and every URL the markup would load from.
    pub async fn loaded_urls(&self) -> Vec<String> {
        let loaded = self
            .client
            .execute(
                "return performance.getEntriesByType('resource').map(e => e.name)",
                Vec::new(),
            )
            .await
            .expect("resource timing");
        let mut urls: Vec<String> = loaded.convert().expect("a list of URLs");
        let source = self.source().await;
        for attribute in ["src=\"", "srcset=\"", "url(", "<link "] {
            for piece in source.split(attribute).skip(1) {
                let value = if attribute == "<link " {
                    piece
                        .split("href=\"")
                        .nth(1)
                        .and_then(|h| h.split('"').next())
                        .unwrap_or_default()
                } else {
                    piece.split(['"', ')']).next().unwrap_or_default()
                };
                urls.push(value.to_string());
            }
        }
        urls
    }

    /// Assert that nothing on the page came, or would come, from another origin than `origin`.
    pub async fn assert_same_origin(&self, origin: &str) {
        let urls = self.loaded_urls().await;
        assert!(!urls.is_empty(), "the page loads its stylesheet at least");
        for url in urls {
            let same = url.starts_with(&format!("{origin}/"))
                || (url.starts_with('/') && !url.starts_with("//"));
            assert!(same, "{url} is from another origin than {origin}");
        }
    }

    /// A PNG of the viewport, written to `docs/screenshots/<name>.png` with
    /// `UPDATE_SCREENSHOTS=1` (the README shows them), otherwise to a temporary folder; either
    /// way it must be a real picture.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot_as_png().await.expect("screenshot");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "a PNG of a page"
        );
        let folder = if std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|v| v.trim() == "1") {
            super::repo_dir().join("docs/screenshots")
        } else {
            std::env::temp_dir().join("referral-sync-screenshots")
        };
        std::fs::create_dir_all(&folder).expect("screenshot folder");
        std::fs::write(folder.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// End the browser session (Chromium exits); the driver stops when `self` is dropped.
    pub async fn close(self) {
        let _ = self.client.clone().quit().await;
    }
}

/// Open a session on the chromedriver at `port`, waiting (bounded) until it listens.
async fn connect(chromium: &Path, port: u16, profile: &Path, width: u32, height: u32) -> WebDriver {
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary(&chromium.display().to_string())
        .expect("binary");
    for arg in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--lang=en-US",
        &format!("--window-size={width},{height}"),
        &format!("--user-data-dir={}", profile.display()),
    ] {
        caps.add_arg(arg).expect("argument");
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        match WebDriver::new(format!("http://127.0.0.1:{port}"), caps.clone()).await {
            Ok(driver) => return driver,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("chromedriver on port {port} did not start Chromium: {e}"),
        }
    }
}
