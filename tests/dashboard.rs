//! `dashboards/tether.json` is a Grafana dashboard Grafana can import as it is: every panel
//! queries the Prometheus data source variable, ids are unique, panels do not overlap, and
//! the rows are the balancer, VRRP and gateways in that order. Whether each query returns
//! data is checked against a real Prometheus by `dashboards/check.sh` (compose/test.sh).

use serde_json::Value;

fn dashboard() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/tether.json");
    let text = std::fs::read_to_string(&path).expect("dashboards/tether.json");
    serde_json::from_str(&text).expect("dashboards/tether.json is JSON")
}

#[test]
fn the_dashboard_is_importable_and_every_panel_queries_the_datasource_variable() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().unwrap_or(0) >= 39,
        "schemaVersion"
    );
    assert!(
        d["id"].is_null(),
        "an imported dashboard must not carry a database id"
    );
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource"
            && v["query"] == "prometheus"
            && v["name"] == "datasource"),
        "a Prometheus data source variable named datasource"
    );

    let panels = d["panels"].as_array().expect("panels");
    let mut ids = std::collections::HashSet::new();
    let mut rows = Vec::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    let mut queries = 0;
    for p in panels {
        let title = p["title"]
            .as_str()
            .expect("every panel has a title")
            .to_string();
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "{title}: duplicate id"
        );
        let g = &p["gridPos"];
        let b = ["x", "y", "w", "h"].map(|k| g[k].as_u64().expect("gridPos"));
        assert!(b[0] + b[2] <= 24, "{title}: wider than the grid");
        for (other, o) in &boxes {
            let apart = b[0] + b[2] <= o[0]
                || o[0] + o[2] <= b[0]
                || b[1] + b[3] <= o[1]
                || o[1] + o[3] <= b[1];
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((title.clone(), b));
        if p["type"] == "row" {
            rows.push(title);
            continue;
        }
        assert!(!rows.is_empty(), "{title}: before the first row");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().expect("expr");
            assert!(expr.contains("tether_"), "{title}: {expr}");
            queries += 1;
        }
    }
    let rows: Vec<&str> = rows
        .iter()
        .map(|r| r.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(rows, ["Balancer", "VRRP", "Gateways"]);
    assert!(queries >= 20, "only {queries} queries");
}
