//! Runtime control over the admin API: drain, maint and weight, with a bearer token.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "0123456789abcdef-test-token";

async fn two_servers(stop: &CancellationToken) -> Lb {
    let a = echo_server("a", stop).await;
    let b = echo_server("b", stop).await;
    let lb = Lb::start(&base(
        &format!("token = \"{TOKEN}\""),
        "[backend.health]\ninterval = \"100ms\"",
        &servers_toml(&[("a", a.addr), ("b", b.addr)], ""),
    ))
    .await;
    lb.wait_ready().await;
    lb
}

fn auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {TOKEN}"))
}

#[tokio::test]
async fn writes_need_the_token_and_bad_requests_say_why() {
    let stop = CancellationToken::new();
    let lb = two_servers(&stop).await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = lb.post("/api/servers/be/a", &form, "state=drain").await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = lb
        .post(
            "/api/servers/be/a",
            &[form[0], ("authorization", "Bearer wrong")],
            "state=drain",
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let (k, v) = auth();
    let h = [form[0], (k, v.as_str())];
    let cases = [
        (
            "/api/servers/be/a",
            "state=sleep",
            400,
            "state \\\"sleep\\\" is not one of ready, drain, maint",
        ),
        (
            "/api/servers/be/a",
            "weight=0",
            400,
            "weight 0 is not in 1..=256",
        ),
        ("/api/servers/be/a", "weight=many", 400, "body:"),
        ("/api/servers/be/a", "", 400, "give state"),
        ("/api/servers/be/a", "colour=red", 400, "unknown field"),
        (
            "/api/servers/be/zz",
            "state=drain",
            404,
            "no server \\\"zz\\\" in backend \\\"be\\\"",
        ),
        ("/api/servers/nope/a", "state=drain", 404, "no server"),
    ];
    for (path, body, status, reason) in cases {
        let r = lb.post(path, &h, body).await;
        assert_eq!(r.status, status, "{path} {body}: {}", r.text());
        assert!(r.text().contains(reason), "{path} {body}: {}", r.text());
    }
    // Reads stay open without the token.
    assert_eq!(lb.get("/api/state").await.status, 200);
}

#[tokio::test]
async fn drain_takes_no_new_connections_and_keeps_open_ones() {
    let stop = CancellationToken::new();
    let lb = two_servers(&stop).await;
    // Open a connection to a (round robin starts with a).
    let mut open = TcpStream::connect(lb.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = open.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"a\n");
    let (k, v) = auth();
    let r = lb
        .post(
            "/api/servers/be/a",
            &[("content-type", "application/json"), (k, &v)],
            r#"{"state":"drain"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let view: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(view["state"], "drain");
    for _ in 0..10 {
        assert_eq!(exchange(lb.addr).await, "b");
    }
    // The open connection to a still works.
    open.write_all(b"still\n").await.unwrap();
    let n = tokio::time::timeout(T, open.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"still\n");
    let state = lb.state().await;
    let a = &state["backends"][0]["servers"][0];
    assert_eq!(
        (a["name"].as_str(), a["state"].as_str(), a["up"].as_bool()),
        (Some("a"), Some("drain"), Some(false))
    );
    // Ready again: a takes connections again.
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        (k, v.as_str()),
    ];
    assert_eq!(
        lb.post("/api/servers/be/a", &form, "state=ready")
            .await
            .status,
        200
    );
    let seen: Vec<String> = futures_collect(lb.addr, 4).await;
    assert!(seen.iter().any(|s| s == "a"), "{seen:?}");
}

async fn futures_collect(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(exchange(addr).await);
    }
    out
}

#[tokio::test]
async fn maint_reports_down_and_weight_changes_the_share() {
    let stop = CancellationToken::new();
    let lb = two_servers(&stop).await;
    let (k, v) = auth();
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        (k, v.as_str()),
    ];
    assert_eq!(
        lb.post("/api/servers/be/b", &form, "state=maint")
            .await
            .status,
        200
    );
    let m = lb.metrics().await;
    assert_eq!(
        metric(&m, "tether_lb_server_up{backend=\"be\",server=\"b\"}"),
        0.0
    );
    for _ in 0..6 {
        assert_eq!(exchange(lb.addr).await, "a");
    }
    assert_eq!(
        lb.post("/api/servers/be/b", &form, "state=ready&weight=3")
            .await
            .status,
        200
    );
    let state = lb.state().await;
    assert_eq!(state["backends"][0]["servers"][1]["weight"], 3);
    let seen = futures_collect(lb.addr, 40).await;
    let bs = seen.iter().filter(|s| *s == "b").count();
    assert_eq!(bs, 30, "weight 3 against 1 gives b 3 of every 4: {seen:?}");
}

#[tokio::test]
async fn a_page_on_another_site_cannot_drain_or_reload_without_a_token() {
    let stop = CancellationToken::new();
    let a = echo_server("a", &stop).await;
    let lb = Lb::start(&base(
        "",
        "[backend.health]\ninterval = \"100ms\"",
        &servers_toml(&[("a", a.addr)], ""),
    ))
    .await;
    lb.wait_ready().await;
    // What a form or a no-cors fetch on any web page can make a browser send.
    let evil = ("origin", "http://evil.example");
    for (headers, body) in [
        (vec![("content-type", "text/plain"), evil], "state=drain"),
        (vec![("content-type", "text/plain")], "state=drain"),
        (
            vec![("content-type", "application/x-www-form-urlencoded")],
            "state=drain",
        ),
        (
            vec![("content-type", "application/json"), evil],
            "{\"state\":\"drain\"}",
        ),
    ] {
        let r = lb.post("/api/servers/be/a", &headers, body).await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.text());
    }
    let r = lb.post("/api/reload", &[evil], "").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        lb.state().await["backends"][0]["servers"][0]["state"],
        "ready"
    );

    // A program says so with a JSON body or the header.
    let json = [("content-type", "application/json")];
    let r = lb
        .post("/api/servers/be/a", &json, "{\"state\":\"drain\"}")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let form = [("x-tether-request", "1")];
    let r = lb.post("/api/servers/be/a", &form, "state=ready").await;
    assert_eq!(r.status, 200, "{}", r.text());
}
