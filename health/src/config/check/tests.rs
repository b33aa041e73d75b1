//! The shared schema: reading the table (unknown keys and type errors at their line) and
//! the validator, one bad input per row.

use super::*;

/// A daemon with a target key bound to `http` and a key of its own for every kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Keys {
    url: Option<String>,
    weight: Option<i64>,
}

impl OwnKeys for Keys {
    const KEYS: &'static [&'static str] = &["url", "weight"];

    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: &'static str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match key {
            "url" => self.url = Some(map.next_value()?),
            _ => self.weight = Some(map.next_value()?),
        }
        Ok(())
    }

    fn kind_bound(&self) -> Vec<(&'static str, &'static [Kind])> {
        match self.url {
            Some(_) => vec![("url", &[Kind::Http])],
            None => Vec::new(),
        }
    }
}

const DEFAULTS: Defaults = Defaults {
    kinds: &[Kind::Http, Kind::Tcp, Kind::Exec],
    interval: Duration::from_secs(2),
    fast_interval: |i| i.min(Duration::from_millis(250)),
    down_interval: |i| i,
    timeout: |_| Duration::from_secs(1),
    rise: 2,
    fall: 3,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    check: Vec<RawCheck<Keys>>,
}

fn read(text: &str) -> Result<RawCheck<Keys>, String> {
    let src = Source::from_text("t.toml", text);
    src.parse::<File>()
        .map(|mut f| f.check.remove(0))
        .map_err(|e| e.to_string())
}

fn check(body: &str) -> Result<Check, Vec<String>> {
    let text = format!("[[check]]\n{body}\n");
    let raw = read(&text).map_err(|e| vec![e])?;
    let src = Source::from_text("t.toml", text.as_str());
    validate(&raw, &DEFAULTS).map_err(|errs| {
        located(&src, &["check".into(), 0.into()], errs)
            .iter()
            .map(|e| e.to_string())
            .collect()
    })
}

#[test]
fn every_key_is_read_and_the_defaults_fill_the_rest() {
    let raw = read(
        "[[check]]\nkind = \"http\"\ninterval = \"1s\"\nfast_interval = \"100ms\"\n\
         down_interval = \"3s\"\ntimeout = \"500ms\"\nrise = 4\nfall = 5\nexpect_status = 204\n\
         url = \"http://127.0.0.1/\"\nweight = -10\n",
    )
    .unwrap();
    assert_eq!(raw.own.weight, Some(-10));
    assert_eq!(
        validate(&raw, &DEFAULTS).unwrap(),
        Check {
            kind: Kind::Http,
            interval: Duration::from_secs(1),
            fast_interval: Duration::from_millis(100),
            down_interval: Duration::from_secs(3),
            timeout: Duration::from_millis(500),
            rise: 4,
            fall: 5,
            expect_status: 204,
        }
    );
    assert_eq!(
        check(""),
        Ok(Check {
            kind: Kind::Tcp,
            interval: Duration::from_secs(2),
            fast_interval: Duration::from_millis(250),
            down_interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            expect_status: 200,
        }),
        "kind defaults to tcp; the rest to the daemon's defaults"
    );
}

#[test]
fn an_inline_table_reads_the_same() {
    let src = Source::from_text(
        "t.toml",
        "check = [{ kind = \"tcp\", interval = \"2s\", rise = 1 }]\n",
    );
    let f: File = src.parse().unwrap();
    assert_eq!(f.check[0].interval, Some(Duration::from_secs(2)));
    assert_eq!(f.check[0].rise, Some(1));
}

#[test]
fn each_bad_key_gives_its_error() {
    let table: &[(&str, &str)] = &[
        (
            "kind = \"dns\"",
            "t.toml:2: check[0].kind: \"dns\" is unknown; kind must be http, tcp or exec",
        ),
        (
            "kind = \"tls\"",
            "t.toml:2: check[0].kind: \"tls\" is not supported here; kind must be http, tcp or exec",
        ),
        (
            "interval = \"0s\"",
            "t.toml:2: check[0].interval: 0ns is too short; interval must be at least 10ms (e.g. \"500ms\" or \"2s\")",
        ),
        (
            "fast_interval = \"5ms\"",
            "t.toml:2: check[0].fast_interval: 5ms is too short; fast_interval must be at least 10ms (e.g. \"500ms\" or \"2s\")",
        ),
        (
            "down_interval = \"1ms\"",
            "t.toml:2: check[0].down_interval: 1ms is too short; down_interval must be at least 10ms (e.g. \"500ms\" or \"2s\")",
        ),
        (
            "timeout = \"9ms\"",
            "t.toml:2: check[0].timeout: 9ms is too short; timeout must be at least 10ms (e.g. \"500ms\" or \"2s\")",
        ),
        (
            "rise = 0",
            "t.toml:2: check[0].rise: rise is 0; rise must be 1..=1000",
        ),
        (
            "fall = 1001",
            "t.toml:2: check[0].fall: fall is 1001; fall must be 1..=1000",
        ),
        (
            "kind = \"http\"\nexpect_status = 99",
            "t.toml:3: check[0].expect_status: expect_status is 99; expect_status must be 100..=599",
        ),
        (
            "expect_status = 200",
            "t.toml:2: check[0].expect_status: \"tcp\" checks do not take `expect_status`; it applies only to kind = \"http\"",
        ),
        (
            "kind = \"exec\"\nurl = \"http://127.0.0.1/\"",
            "t.toml:3: check[0].url: \"exec\" checks do not take `url`; it applies only to kind = \"http\"",
        ),
    ];
    for (body, want) in table {
        assert_eq!(check(body), Err(vec![want.to_string()]), "{body}");
    }
}

#[test]
fn every_error_is_reported_at_once() {
    let errs = check("kind = \"dns\"\nrise = 0\nfall = 0\ntimeout = \"0s\"").unwrap_err();
    let keys: Vec<&str> = errs
        .iter()
        .map(|e| e.split(": ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        keys,
        [
            "check[0].kind",
            "check[0].timeout",
            "check[0].rise",
            "check[0].fall"
        ]
    );
}

#[test]
fn an_unknown_key_is_refused_at_its_line_naming_both_lists() {
    let e = read("[[check]]\nkind = \"tcp\"\nintervall = \"2s\"\n").unwrap_err();
    assert!(
        e.starts_with("t.toml:3: ") && e.contains("unknown field `intervall`"),
        "{e}"
    );
    assert!(e.contains("`expect_status`, `url`, `weight`"), "{e}");
}

#[test]
fn a_value_of_the_wrong_type_is_refused_at_its_key() {
    let e = read("[[check]]\nkind = \"tcp\"\nrise = \"two\"\n").unwrap_err();
    assert!(e.starts_with("t.toml:3: check[0].rise: "), "{e}");
    let e = read("[[check]]\ninterval = \"soon\"\n").unwrap_err();
    assert!(e.starts_with("t.toml:2: check[0].interval: "), "{e}");
    let e = read("[[check]]\nweight = \"heavy\"\n").unwrap_err();
    assert!(e.starts_with("t.toml:2: check[0].weight: "), "{e}");
}
