use super::addr::{bind_addrs, server_addr};
use super::*;
use tether_health::config::Source;
use tether_lb::config::{Balance, HealthKind, ProxyVersion, ServerAddress, SniPattern};

/// A TLS edge as HAProxy users write it: every directive the converter maps, and a few it
/// reports.
const EDGE: &str = r#"# TLS passthrough edge
global
    log /dev/log local0
    maxconn 20000
    daemon
    hard-stop-after 30s

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 1m
    timeout server 60000
    timeout queue 3000
    retries 3
    option redispatch
    maxconn 5000

frontend fe_tls
    bind *:443
    bind :::8443
    bind 192.0.2.10:9443-9444
    maxconn 1000
    tcp-request inspect-delay 5s
    tcp-request content accept if { req_ssl_hello_type 1 }
    acl is_api req.ssl_sni -i api.example.com
    acl is_api req.ssl_sni -i api2.example.com
    acl is_path path_beg /x
    use_backend be_api if is_api
    use_backend be_wild if { req_ssl_sni -m end .apps.example.com }
    use_backend be_api if is_path
    default_backend be_web
    stick-table type ip size 1m

frontend fe_proxied
    bind 127.0.0.1:7443 accept-proxy
    default_backend be_wild

backend be_web
    balance leastconn
    default-server inter 1s rise 2 fall 3 check
    option httpchk GET /healthz
    http-check expect status 204
    server web1 10.0.0.1:443 weight 10 maxconn 200 maxqueue 20
    server web2 10.0.0.2:443 weight 20 port 8080
    server web3 10.0.0.3:443 backup
    server web4 10.0.0.4:443 disabled
    server web5 [2001:db8::5]:443 slowstart 10s

backend be_api
    balance source
    hash-type consistent
    option tcp-check
    timeout check 400ms
    server api1 10.0.1.1:8443 check inter 500ms fall 2 send-proxy-v2
    server api2 10.0.1.2:8443 check inter 500ms fall 2 send-proxy-v2

backend be_wild
    balance random(2)
    server w1 10.0.2.1:443 send-proxy

listen mysql
    bind 127.0.0.1:3306
    balance first
    server db1 10.0.3.1 check
    server db2 10.0.3.2:3306 check backup

frontend fe_http
    bind :80
    mode http
    default_backend be_missing
"#;

fn lb(toml: &str) -> tether_lb::Config {
    match tether_lb::Config::from_source(&Source::from_text("lb.toml", toml)) {
        Ok(c) => c,
        Err(e) => panic!("{e}\n{toml}"),
    }
}

fn warnings(c: &Conversion) -> Vec<String> {
    c.warnings.iter().map(|w| w.render("h.cfg")).collect()
}

#[test]
fn the_edge_converts_into_a_config_tether_lb_accepts_with_the_same_meaning() {
    let c = convert(EDGE, "haproxy.cfg").unwrap();
    let text = c.file("lb.toml").unwrap();
    let cfg = lb(text);
    assert_eq!(cfg.grace_period, Duration::from_secs(30));

    let fe = &cfg.frontends[0];
    assert_eq!(fe.name, "fe_tls");
    let binds: Vec<String> = fe.binds.iter().map(ToString::to_string).collect();
    assert_eq!(
        binds,
        [
            "0.0.0.0:443",
            "[::]:8443",
            "192.0.2.10:9443",
            "192.0.2.10:9444"
        ]
    );
    assert_eq!(fe.maxconn, 1000);
    assert_eq!(fe.client_timeout, Duration::from_secs(60));
    assert_eq!(fe.inspect_timeout, Duration::from_secs(5));
    assert!(!fe.accept_proxy);
    assert_eq!(cfg.backends[fe.backend].name, "be_web");
    let routes: Vec<(SniPattern, &str)> = fe
        .routes
        .iter()
        .map(|r| (r.sni.clone(), cfg.backends[r.backend].name.as_str()))
        .collect();
    assert_eq!(
        routes,
        [
            (SniPattern::Exact("api.example.com".into()), "be_api"),
            (SniPattern::Exact("api2.example.com".into()), "be_api"),
            (SniPattern::Wildcard(".apps.example.com".into()), "be_wild"),
        ]
    );
    assert!(cfg.frontends[1].accept_proxy);
    assert_eq!(cfg.frontends[1].maxconn, 5000, "defaults maxconn");

    let web = &cfg.backends[0];
    assert_eq!(web.balance, Balance::Leastconn);
    assert_eq!(web.connect_timeout, Duration::from_secs(5));
    assert_eq!(web.server_timeout, Duration::from_secs(60));
    assert_eq!(web.queue_timeout, Duration::from_secs(3));
    assert_eq!(web.retries, 3);
    let h = web.health.as_ref().unwrap();
    assert_eq!(
        (
            h.kind,
            h.interval,
            h.rise,
            h.fall,
            h.path.as_str(),
            h.expect_status
        ),
        (
            HealthKind::Http,
            Duration::from_secs(1),
            2,
            3,
            "/healthz",
            204
        )
    );
    // name address weight backup maxconn maxqueue check_port
    let servers: Vec<String> = web
        .servers
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {} {} {} {:?}",
                s.name, s.address, s.weight, s.backup, s.maxconn, s.maxqueue, s.check_port
            )
        })
        .collect();
    assert_eq!(
        servers,
        [
            "web1 10.0.0.1:443 10 false 200 20 None",
            "web2 10.0.0.2:443 20 false 0 1024 Some(8080)",
            "web3 10.0.0.3:443 1 true 0 1024 None",
            "web5 [2001:db8::5]:443 1 false 0 1024 None",
        ]
    );

    let api = &cfg.backends[1];
    assert_eq!(api.balance, Balance::Source);
    assert_eq!(api.send_proxy, Some(ProxyVersion::V2));
    let h = api.health.as_ref().unwrap();
    assert_eq!(
        (h.kind, h.interval, h.timeout, h.fall),
        (
            HealthKind::Tcp,
            Duration::from_millis(500),
            Duration::from_millis(400),
            2
        )
    );
    let wild = &cfg.backends[2];
    assert_eq!(wild.balance, Balance::Random);
    assert_eq!(wild.send_proxy, Some(ProxyVersion::V1));
    assert!(
        wild.health.is_none(),
        "no `check`: always up, as in HAProxy"
    );

    let mysql = &cfg.backends[3];
    assert_eq!(mysql.balance, Balance::First);
    assert_eq!(
        mysql.servers[0].address,
        ServerAddress::Ip("10.0.3.1:3306".parse().unwrap()),
        "a server without a port gets the listen's port"
    );
    assert_eq!(cfg.frontends[2].name, "mysql");
    assert_eq!(cfg.frontends.len(), 3, "fe_http has no usable backend");
}

#[test]
fn every_block_says_where_it_came_from() {
    let c = convert(EDGE, "haproxy.cfg").unwrap();
    let text = c.file("lb.toml").unwrap();
    for needle in [
        "# haproxy.cfg:8: defaults\n[defaults]",
        "# haproxy.cfg:20: frontend fe_tls\n[[frontend]]",
        "# haproxy.cfg:30: use_backend\n[[frontend.route]]",
        "# haproxy.cfg:40: backend be_web\n[[backend]]",
        "# haproxy.cfg:45: checks as on server web1\n[backend.health]",
        "# haproxy.cfg:46: server web2\n[[backend.server]]",
        "# haproxy.cfg:63: listen mysql\n[[frontend]]",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
}

#[test]
fn what_has_no_equivalent_is_reported_by_line() {
    let c = convert(EDGE, "haproxy.cfg").unwrap();
    let got = warnings(&c);
    for want in [
        "h.cfg:3: log /dev/log: not carried over: tether logs",
        "h.cfg:4: maxconn 20000: not carried over: a process-wide limit",
        "h.cfg:5: daemon: not carried over",
        "h.cfg:10: log global: not carried over",
        "h.cfg:11: option tcplog: not carried over",
        "h.cfg:29: acl is_path: not carried over: only SNI ACLs",
        "h.cfg:31: use_backend be_wild: not carried over: -m end .apps.example.com: tether's *.apps.example.com matches exactly one label",
        "h.cfg:32: use_backend be_api: not carried over: ACL \"is_path\" is not an SNI ACL",
        "h.cfg:34: stick-table type: not carried over: tether has no stick tables",
        "h.cfg:48: server web4 disabled: not carried over",
        "h.cfg:49: server web5 slowstart 10s: not carried over",
        "h.cfg:69: frontend fe_http: not carried over: no default_backend with servers",
        "h.cfg:71: mode http: not carried over: tether lb is layer 4",
    ] {
        assert!(
            got.iter().any(|g| g.starts_with(want)),
            "{want:?} not in\n{}",
            got.join("\n")
        );
    }
    assert_eq!(got.len(), 13, "{}", got.join("\n"));
}

#[test]
fn several_defaults_sections_are_written_into_each_proxy() {
    let cfg = "defaults\n timeout connect 1s\n balance leastconn\n\
               frontend a\n bind 127.0.0.1:1\n default_backend b\n\
               backend b\n server s 127.0.0.1:2\n\
               defaults\n timeout connect 3s\n\
               frontend c\n bind 127.0.0.1:3\n default_backend d\n\
               backend d\n server s 127.0.0.1:4\n";
    let c = convert(cfg, "x").unwrap();
    let l = lb(c.file("lb.toml").unwrap());
    assert_eq!(l.backends[0].connect_timeout, Duration::from_secs(1));
    assert_eq!(l.backends[0].balance, Balance::Leastconn);
    assert_eq!(l.backends[1].connect_timeout, Duration::from_secs(3));
    assert_eq!(
        l.backends[1].balance,
        Balance::Roundrobin,
        "a new defaults resets"
    );
}

#[test]
fn http_check_send_and_old_style_host_headers_set_path_and_host() {
    for (lines, path, host) in [
        (
            "option httpchk\n http-check send meth GET uri /ready hdr Host svc.example\n",
            "/ready",
            Some("svc.example"),
        ),
        (
            "option httpchk GET /r HTTP/1.1\\r\\nHost:\\ a.example\n",
            "/r",
            Some("a.example"),
        ),
        ("option httpchk /only\n", "/only", None),
    ] {
        let cfg = format!("listen l\n bind 127.0.0.1:1\n {lines} server s 127.0.0.1:2 check\n");
        let c = convert(&cfg, "x").unwrap();
        let l = lb(c.file("lb.toml").unwrap());
        let h = l.backends[0].health.as_ref().unwrap();
        assert_eq!((h.path.as_str(), h.host.as_deref()), (path, host), "{cfg}");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
}

#[test]
fn times_follow_haproxy_units_and_bare_numbers_are_milliseconds() {
    for (s, want) in [
        ("250", Some(Duration::from_millis(250))),
        ("250ms", Some(Duration::from_millis(250))),
        ("2s", Some(Duration::from_secs(2))),
        ("3m", Some(Duration::from_secs(180))),
        ("1h", Some(Duration::from_secs(3600))),
        ("1d", Some(Duration::from_secs(86400))),
        ("1500us", Some(Duration::from_micros(1500))),
        ("5x", None),
        ("", None),
    ] {
        assert_eq!(time(s), want, "{s}");
    }
}

#[test]
fn bind_addresses_cover_wildcards_ipv6_and_ranges() {
    let show =
        |a: &str| bind_addrs(a).map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>());
    assert_eq!(show("*:80").unwrap(), ["0.0.0.0:80"]);
    assert_eq!(show(":80").unwrap(), ["0.0.0.0:80"]);
    assert_eq!(show(":::80").unwrap(), ["[::]:80"]);
    assert_eq!(show("[2001:db8::1]:80").unwrap(), ["[2001:db8::1]:80"]);
    assert_eq!(show("ipv6@:80").unwrap(), ["[::]:80"]);
    assert_eq!(
        show("10.0.0.1:80-81").unwrap(),
        ["10.0.0.1:80", "10.0.0.1:81"]
    );
    assert!(show("/run/x.sock").is_err());
    assert!(show("fd@3").is_err());
    assert!(show("example.com:80").is_err());
    assert!(show("10.0.0.1").is_err());
}

#[test]
fn server_addresses_keep_names_and_missing_ports() {
    assert_eq!(
        server_addr("10.0.0.1:80"),
        Ok(("10.0.0.1".into(), Some(80)))
    );
    assert_eq!(server_addr("10.0.0.1"), Ok(("10.0.0.1".into(), None)));
    assert_eq!(server_addr("[::1]:80"), Ok(("::1".into(), Some(80))));
    assert_eq!(server_addr("2001:db8::1"), Ok(("2001:db8::1".into(), None)));
    assert_eq!(
        server_addr("db.internal:5432"),
        Ok(("db.internal".into(), Some(5432)))
    );
    assert!(server_addr("10.0.0.1:+1").is_err());
    assert!(server_addr("unix@/x").is_err());
}

#[test]
fn words_follow_haproxy_quoting() {
    assert_eq!(
        words(r#"  option httpchk GET / "HTTP/1.1\r\nHost: x" # c"#).unwrap(),
        ["option", "httpchk", "GET", "/", "HTTP/1.1\r\nHost: x"]
    );
    assert_eq!(words(r"a\ b 'c d'").unwrap(), ["a b", "c d"]);
    assert!(words("a \"b").is_err());
}

#[test]
fn input_that_is_not_an_haproxy_cfg_is_a_parse_error() {
    for (cfg, line) in [
        ("server s 1.2.3.4:5\n", 1),
        ("", 1),
        ("global\n daemon\nfrontend\n", 3),
        ("frontend f\n bind \"*:80\n", 2),
        ("defaults\n mode tcp\n", 2),
    ] {
        let e = convert(cfg, "x").unwrap_err();
        assert_eq!(e.line, line, "{cfg:?}: {e}");
    }
}

#[test]
fn servers_without_a_port_behind_several_ports_are_reported() {
    let cfg = "frontend a\n bind :80\n bind :81\n default_backend b\n\
               backend b\n server s1 10.0.0.1\n server s2 10.0.0.2:80\n";
    let c = convert(cfg, "x").unwrap();
    let l = lb(c.file("lb.toml").unwrap());
    assert_eq!(l.backends[0].servers.len(), 1);
    assert!(
        warnings(&c)[0].starts_with("h.cfg:6: server s1 10.0.0.1: not carried over: no port"),
        "{:?}",
        warnings(&c)
    );
}

#[test]
fn servers_with_and_without_check_or_different_settings_are_reported() {
    let cfg = "listen a\n bind :80\n server s1 10.0.0.1:80 check inter 1s\n\
               server s2 10.0.0.2:80\n server s3 10.0.0.3:80 check inter 2s send-proxy\n";
    let c = convert(cfg, "x").unwrap();
    lb(c.file("lb.toml").unwrap());
    let got = warnings(&c);
    assert_eq!(
        got.iter()
            .map(|g| g.split(": not").next().unwrap())
            .collect::<Vec<_>>(),
        [
            "h.cfg:3: server s1 (PROXY header)",
            "h.cfg:4: server s2 (no check)",
            "h.cfg:4: server s2 (PROXY header)",
            "h.cfg:5: server s3 inter",
        ]
    );
}

#[test]
fn fastinter_and_downinter_become_the_faster_check_intervals() {
    let cfg = "defaults\n default-server inter 3s fastinter 400ms downinter 1s\n\
               listen l\n bind 127.0.0.1:1\n server s 127.0.0.1:2 check\n";
    let c = convert(cfg, "x").unwrap();
    let l = lb(c.file("lb.toml").unwrap());
    let h = l.backends[0].health.as_ref().unwrap();
    assert_eq!(
        (h.interval, h.fast_interval, h.down_interval),
        (
            Duration::from_secs(3),
            Duration::from_millis(400),
            Duration::from_secs(1)
        )
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}
