//! The `/stats` page in a real browser: Debian's headless Chromium renders it to a PNG, and
//! Tesseract reads the screenshot back, so what an operator would see is what is checked.

mod common;

use std::process::Command;

use common::*;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn the_stats_page_shows_every_server_and_its_state_in_a_browser() {
    let chromium = require("chromium", "chromium");
    let tesseract = require("tesseract", "tesseract-ocr");
    let stop = CancellationToken::new();
    let a = echo_server("alpha", &stop).await;
    let b = echo_server("bravo", &stop).await;
    let dead = free_port("127.0.0.1");
    let lb = Lb::start(&base(
        "",
        "[backend.health]\ninterval = \"100ms\"\nfall = 1",
        &servers_toml(
            &[
                ("alpha", a.addr),
                ("bravo", b.addr),
                ("charlie", format!("127.0.0.1:{dead}").parse().unwrap()),
            ],
            "",
        ),
    ))
    .await;
    lb.wait_health("alpha", "up").await;
    lb.wait_health("charlie", "down").await;
    for _ in 0..4 {
        exchange(lb.addr).await;
    }
    let r = lb
        .post(
            "/api/servers/be/bravo",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-tether-request", "1"),
            ],
            "state=drain",
        )
        .await;
    assert_eq!(r.status, 200);
    let html = lb.get("/stats").await.text();
    assert!(
        html.contains("alpha") && html.contains("DRAIN") && html.contains("DOWN"),
        "{html}"
    );

    let dir = TempDir::new("stats");
    let png = dir.path.join("stats.png");
    let url = format!("http://{}/stats", lb.admin);
    let (chromium, tesseract, png2) = (chromium.clone(), tesseract.clone(), png.clone());
    let text = tokio::task::spawn_blocking(move || {
        let profile = png2.parent().unwrap().join("profile");
        let out = Command::new("timeout")
            .arg("60")
            .arg(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args(["--window-size=1600,900", "--force-device-scale-factor=2"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", png2.display()))
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            png2.exists(),
            "no screenshot: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ocr = Command::new("timeout")
            .arg("60")
            .arg(&tesseract)
            .arg(&png2)
            .arg("stdout")
            .output()
            .unwrap();
        assert!(
            ocr.status.success(),
            "{}",
            String::from_utf8_lossy(&ocr.stderr)
        );
        String::from_utf8_lossy(&ocr.stdout).to_string()
    })
    .await
    .unwrap();
    // Keep the screenshot where a person can look at it after the run.
    let keep = std::env::temp_dir().join("tether-stats.png");
    let _ = std::fs::copy(&png, &keep);
    for word in [
        "Tether load balancer",
        "alpha",
        "bravo",
        "charlie",
        "UP",
        "DRAIN",
        "DOWN",
        "Frontends",
    ] {
        assert!(
            text.contains(word),
            "{word:?} not seen in the screenshot ({}); OCR read:\n{text}",
            keep.display()
        );
    }
}
