//! The web page in a real headless browser (Debian's chromium driven by playwright-core,
//! see tests/browser/page.test.mjs), against `vigia serve --demo`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Skips (with a notice) when the browser tooling is absent, unless CI requires it.
fn skip_or_fail(why: &str) {
    vigia_core::services::skip_or_fail(
        "browser test",
        &format!("{why}; install chromium and node to run it"),
    );
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

#[tokio::test(flavor = "multi_thread")]
async fn page_shows_live_cards_and_acks_alerts_in_chromium() {
    if !Path::new("/usr/bin/chromium").exists() {
        return skip_or_fail("/usr/bin/chromium is missing");
    }
    if Command::new("node").arg("--version").output().is_err() {
        return skip_or_fail("node is missing");
    }
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core").exists() {
        // From the lockfile; playwright-core downloads no browser.
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return skip_or_fail("`npm ci` in tests/browser failed");
        }
    }
    let server = TestServer::start(Options {
        demo: true,
        ..Options::default()
    });
    let screenshots = std::env::temp_dir().join("vigia-screenshots");
    let _ = std::fs::create_dir_all(&screenshots);
    let output = tokio::task::spawn_blocking({
        let base = server.base.clone();
        let screenshots = screenshots.clone();
        move || {
            Command::new("node")
                .args(["--test", "page.test.mjs"])
                .current_dir(browser_dir())
                .env("VIGIA_URL", base)
                .env("VIGIA_TOKEN", TOKEN)
                .env("SCREENSHOT_DIR", screenshots)
                .output()
                .expect("run node")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log()
    );
    println!("screenshots in {}", screenshots.display());
}
