//! Every configuration error names the file, the line and the key, and says what is allowed.

mod common;

use tether_health::config::Source;
use tether_lb::Config;

fn errors(text: &str) -> Vec<String> {
    match Config::from_source(&Source::from_text("lb.toml", text)) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

const GOOD: &str = r#"
[[frontend]]
name = "svc-a"
bind = ["0.0.0.0:5551", "[::]:5551"]
backend = "web"

[[backend]]
name = "web"

[[backend.server]]
name = "a"
address = "127.0.0.1:6001"
"#;

#[test]
fn the_minimal_config_is_valid_and_gets_the_documented_defaults() {
    let c = Config::from_source(&Source::from_text("lb.toml", GOOD)).unwrap();
    let b = &c.backends[0];
    assert_eq!(b.connect_timeout.as_secs(), 2);
    assert_eq!(b.server_timeout.as_secs(), 60);
    assert_eq!(b.retries, 2);
    assert_eq!(c.frontends[0].client_timeout.as_secs(), 60);
    assert_eq!(c.frontends[0].maxconn, 10_000);
    let h = b.health.as_ref().unwrap();
    assert_eq!((h.interval.as_secs(), h.rise, h.fall), (2, 2, 3));
    assert_eq!(b.servers[0].weight, 1);
}

#[test]
fn splice_is_on_by_default_and_set_in_defaults_or_per_backend() {
    let c = Config::from_source(&Source::from_text("lb.toml", GOOD)).unwrap();
    assert!(c.backends[0].splice);
    let text = format!(
        "[defaults]\nsplice = false\n{GOOD}\n[[backend]]\nname = \"bulk\"\nsplice = true\n\
         [[backend.server]]\nname = \"b\"\naddress = \"127.0.0.1:6002\"\n"
    );
    let c = Config::from_source(&Source::from_text("lb.toml", &text)).unwrap();
    let splice: Vec<(&str, bool)> = c
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.splice))
        .collect();
    assert_eq!(splice, [("web", false), ("bulk", true)]);
    let errs = errors(&format!("[defaults]\nsplice = \"auto\"\n{GOOD}"));
    assert!(
        errs[0].contains("lb.toml:2") && errs[0].contains("splice"),
        "{errs:?}"
    );
}

#[test]
fn weight_zero() {
    let text = GOOD.replace(
        "address = \"127.0.0.1:6001\"",
        "address = \"127.0.0.1:6001\"\nweight = 0",
    );
    assert_eq!(
        errors(&text),
        [
            "lb.toml:13: backend[0].server[0].weight: backend \"web\": server \"a\" has weight 0; weight must be 1..=256"
        ]
    );
}

#[test]
fn unknown_key() {
    let text = GOOD.replace("name = \"web\"", "name = \"web\"\nbalanse = \"first\"");
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("lb.toml:9: balanse: unknown field `balanse`, expected one of"),
        "{}",
        e[0]
    );
    assert!(e[0].contains("`balance`"), "{}", e[0]);
}

#[test]
fn unknown_balance_algorithm() {
    let text = GOOD.replace("name = \"web\"", "name = \"web\"\nbalance = \"fastest\"");
    let e = errors(&text);
    assert!(e[0].starts_with("lb.toml:9: "), "{}", e[0]);
    assert!(e[0].contains("unknown variant `fastest`, expected one of `roundrobin`, `leastconn`, `source`, `random`, `first`"), "{}", e[0]);
}

#[test]
fn duplicate_names() {
    let text = format!("{GOOD}\n[[backend.server]]\nname = \"a\"\naddress = \"127.0.0.1:6002\"\n");
    assert_eq!(
        errors(&text),
        [
            "lb.toml:15: backend[0].server[1].name: backend \"web\": server \"a\" is defined twice; server names must be unique in a backend"
        ]
    );
    let text = format!(
        "{GOOD}\n[[backend]]\nname = \"web\"\n[[backend.server]]\nname = \"b\"\naddress = \"127.0.0.1:1\"\n"
    );
    assert_eq!(
        errors(&text),
        ["lb.toml:15: backend[1].name: backend \"web\" is defined twice; names must be unique"]
    );
}

#[test]
fn a_backend_nobody_defines() {
    let text = GOOD.replace("backend = \"web\"", "backend = \"api\"");
    assert_eq!(
        errors(&text),
        [
            "lb.toml:5: frontend[0].backend: frontend \"svc-a\" uses backend \"api\", which is not defined (defined: web)"
        ]
    );
}

/// `[backend.health]` is the health-check table the three daemons share: its rules and
/// wording are tether-health's.
#[test]
fn health_keys_follow_the_shared_schema() {
    let text = format!(
        "{GOOD}\n[backend.health]\nkind = \"tcp\"\npath = \"/x\"\nfast_interval = \"5ms\"\n"
    );
    assert_eq!(
        errors(&text),
        [
            "lb.toml:16: backend[0].health.path: \"tcp\" checks do not take `path`; it applies only to kind = \"http\"",
            "lb.toml:17: backend[0].health.fast_interval: 5ms is too short; fast_interval must be at least 10ms (e.g. \"500ms\" or \"2s\")",
        ]
    );
    let text = format!("{GOOD}\n[backend.health]\nkind = \"exec\"\n");
    assert_eq!(
        errors(&text),
        [
            "lb.toml:15: backend[0].health.kind: \"exec\" is not supported here; kind must be tcp, http, tls or none"
        ]
    );
}

#[test]
fn rise_zero_and_fall_too_big() {
    let text = format!("{GOOD}\n[backend.health]\nrise = 0\nfall = 5000\n");
    assert_eq!(
        errors(&text),
        [
            "lb.toml:15: backend[0].health.rise: rise is 0; rise must be 1..=1000",
            "lb.toml:16: backend[0].health.fall: fall is 5000; fall must be 1..=1000",
        ]
    );
}

#[test]
fn addresses_that_do_not_parse() {
    let text = GOOD
        .replace("\"0.0.0.0:5551\"", "\"0.0.0.0\"")
        .replace("127.0.0.1:6001", "web server:80");
    assert_eq!(
        errors(&text),
        [
            "lb.toml:4: frontend[0].bind[0]: frontend \"svc-a\": bind \"0.0.0.0\" is not an ip:port address (e.g. \"0.0.0.0:5551\" or \"[::]:5551\")",
            "lb.toml:12: backend[0].server[0].address: backend \"web\": server \"a\": address \"web server:80\" is neither an ip:port nor a valid host:port",
        ]
    );
    for (address, why) in [
        ("127.0.0.1:0", "has port 0; the port must be 1..=65535"),
        (
            "999.1.1.1:80",
            "is not a valid IPv4 address and port (each of the four numbers must be 0..=255)",
        ),
        (
            "10.0.0:80",
            "is not a valid IPv4 address and port (each of the four numbers must be 0..=255)",
        ),
    ] {
        assert_eq!(
            errors(&GOOD.replace("127.0.0.1:6001", address)),
            [format!(
                "lb.toml:12: backend[0].server[0].address: backend \"web\": server \"a\": address \"{address}\" {why}"
            )]
        );
    }
    let text = GOOD.replace("127.0.0.1:6001", "db.example.com:99999");
    assert_eq!(
        errors(&text),
        [
            "lb.toml:12: backend[0].server[0].address: backend \"web\": server \"a\": address \"db.example.com:99999\" has a port that is not 1..=65535"
        ]
    );
}

#[test]
fn a_bad_duration_and_a_wrong_type() {
    let text = format!("[defaults]\nconnect_timeout = \"soon\"\n{GOOD}");
    let e = errors(&text);
    assert!(
        e[0].starts_with("lb.toml:2: defaults.connect_timeout: "),
        "{}",
        e[0]
    );
    assert!(
        e[0].ends_with("; connect_timeout must be a duration such as \"500ms\", \"2s\" or \"1m\""),
        "{}",
        e[0]
    );
    let text = GOOD.replace("name = \"web\"", "name = \"web\"\nretries = \"two\"");
    assert_eq!(
        errors(&text),
        [
            "lb.toml:9: backend[0].retries: invalid type: string \"two\", expected i64; retries must be an integer 0..=100"
        ]
    );
    // Deep in arrays of tables, the path names every index.
    let text = GOOD.replace(
        "address = \"127.0.0.1:6001\"",
        "address = \"127.0.0.1:6001\"\nweight = 2.5",
    );
    assert_eq!(
        errors(&text),
        [
            "lb.toml:13: backend[0].server[0].weight: invalid type: floating point `2.5`, expected i64; weight must be an integer 1..=256"
        ]
    );
    let text = GOOD.replace("\"[::]:5551\"", "5551");
    assert_eq!(
        errors(&text),
        ["lb.toml:4: frontend[0].bind[1]: invalid type: integer `5551`, expected a string"]
    );
}

#[test]
fn several_errors_are_all_reported_in_file_order() {
    let text = GOOD
        .replace("backend = \"web\"", "backend = \"nope\"")
        .replace(
            "address = \"127.0.0.1:6001\"",
            "address = \"127.0.0.1:6001\"\nweight = 300\nmaxconn = -1",
        );
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].starts_with("lb.toml:5:"));
    assert!(e[1].starts_with("lb.toml:13:"));
    assert!(e[2].starts_with(
        "lb.toml:14: backend[0].server[0].maxconn: maxconn is -1; maxconn must be 0..=10000000"
    ));
}

#[test]
fn the_same_bind_twice_and_no_servers() {
    let text = format!(
        "{GOOD}\n[[frontend]]\nname = \"b\"\nbind = [\"0.0.0.0:5551\"]\nbackend = \"empty\"\n[[backend]]\nname = \"empty\"\n"
    );
    assert_eq!(
        errors(&text),
        [
            "lb.toml:16: frontend[1].bind[0]: frontend \"b\": 0.0.0.0:5551 is already bound by frontend \"svc-a\"",
            "lb.toml:18: backend[1].server: backend \"empty\" has no server; add at least one [[backend.server]]",
        ]
    );
}

#[test]
fn a_tls_check_needs_a_readable_ca_with_a_certificate() {
    let tmp = common::TempDir::new("ca");
    let dir = &tmp.path;
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let with = |ca: &std::path::Path| {
        format!(
            "{GOOD}[backend.health]\nkind = \"tls\"\nca = \"{}\"\n",
            ca.display()
        )
    };
    let errs = errors(&with(&dir.join("missing.pem")));
    assert!(
        errs[0].starts_with("lb.toml:15: backend[0].health.ca: backend \"web\": ca \""),
        "{errs:?}"
    );
    let errs = errors(&with(&empty));
    assert!(errs[0].contains("no certificate in the file"), "{errs:?}");
}

#[test]
fn every_example_loads_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // Examples are named after their daemon: lb*.toml, demo-lb.toml, ...
        if path.extension().is_some_and(|e| e == "toml") && name.contains("lb") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "found only {n} lb examples in {}", dir.display());
}

const DR: &str = r#"
[[frontend]]
name = "svc-a"
mode = "dr"
bind = ["192.0.2.100:5551"]
interface = "eth0"
backend = "cloud"

[[backend]]
name = "cloud"

[[backend.server]]
name = "cloud1"
address = "192.0.2.21:5551"
weight = 2
"#;

#[test]
fn a_dr_frontend_is_valid_and_gets_its_defaults() {
    let c = Config::from_source(&Source::from_text("lb.toml", DR)).unwrap();
    let dr = c.frontends[0].dr.as_ref().unwrap();
    assert_eq!(dr.interface, "eth0");
    assert_eq!(dr.flow_timeout.as_secs(), 900);
    assert!(
        Config::from_source(&Source::from_text("lb.toml", GOOD))
            .unwrap()
            .frontends[0]
            .dr
            .is_none()
    );
}

#[test]
fn dr_refuses_what_needs_the_stream_and_says_why() {
    let cases: &[(&str, &str, &str)] = &[
        ("interface = \"eth0\"\n", "", "needs interface"),
        (
            "backend = \"cloud\"\n",
            "backend = \"cloud\"\naccept_proxy = true\n",
            "PROXY header",
        ),
        (
            "backend = \"cloud\"\n",
            "backend = \"cloud\"\n[[frontend.route]]\nsni = \"a.example\"\nbackend = \"cloud\"\n",
            "SNI",
        ),
        (
            "name = \"cloud\"\n",
            "name = \"cloud\"\nsend_proxy = \"v2\"\n",
            "PROXY header",
        ),
        (
            "192.0.2.21:5551",
            "192.0.2.21:80",
            "the ports must be the same",
        ),
        (
            "192.0.2.21:5551",
            "[2001:db8::21]:5551",
            "one address family",
        ),
        ("192.0.2.100:5551", "0.0.0.0:5551", "binds a VIP and a port"),
        (
            "interface = \"eth0\"",
            "interface = \"a/b\"",
            "not a link name",
        ),
        (
            "interface = \"eth0\"",
            "interface = \"eth0\"\nflow_timeout = \"0s\"",
            "above 0",
        ),
    ];
    for (from, to, want) in cases {
        let text = DR.replacen(from, to, 1);
        let errs = errors(&text);
        assert!(
            errs.iter()
                .any(|e| e.contains(want) && e.starts_with("lb.toml:")),
            "{to:?}: wanted {want:?} in {errs:?}"
        );
    }
    let proxy_with_interface = GOOD.replace(
        "backend = \"web\"\n",
        "backend = \"web\"\ninterface = \"eth0\"\n",
    );
    let errs = errors(&proxy_with_interface);
    assert!(
        errs.iter()
            .any(|e| e.contains("applies only to mode = \"dr\"")),
        "{errs:?}"
    );
}

#[test]
fn the_admin_on_a_frontend_address_is_refused() {
    for listen in ["0.0.0.0:5551", "127.0.0.1:5551", "[::]:5551"] {
        let errs = errors(&format!("[admin]\nlisten = \"{listen}\"\n{GOOD}"));
        assert_eq!(
            errs,
            [format!(
                "lb.toml:2: admin.listen: admin listen {listen} overlaps bind 0.0.0.0:5551 of frontend \"svc-a\"; give the admin another port"
            )]
        );
    }
    Config::from_source(&Source::from_text(
        "lb.toml",
        format!("[admin]\nlisten = \"127.0.0.1:5552\"\n{GOOD}"),
    ))
    .unwrap();
}
