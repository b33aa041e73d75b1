//! Running the `nft` tool: a script on standard input is one atomic transaction (the way
//! kube-proxy's nftables mode programs the kernel), and `nft -j` lists counters and flow
//! maps as JSON. The tool is nftables' own front end, kept in step with the kernel's API by
//! the same project, so there is no netlink encoding of ours to keep correct.

use std::collections::HashMap;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Why `nft` failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The tool is not installed.
    #[error(
        "nftables is unavailable: the nft program was not found (install the nftables package)"
    )]
    Missing,
    /// The kernel refused for want of rights.
    #[error("nftables refused: {0} (tether lb needs CAP_NET_ADMIN for mode = \"dr\")")]
    Permission(String),
    /// Any other refusal.
    #[error("nft: {0}")]
    Failed(String),
    /// Running it failed.
    #[error("running nft: {0}")]
    Io(#[from] std::io::Error),
    /// Its JSON was not what nft 1.0 prints.
    #[error("reading nft's JSON: {0}")]
    Json(String),
}

/// Applies `script` as one transaction.
pub async fn run(script: &str) -> Result<(), NftError> {
    let mut child = spawn(&["-f", "-"])?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    check(&out)
}

/// Counters of `table`: name to (packets, bytes).
pub async fn counters(table: &str) -> Result<HashMap<String, (u64, u64)>, NftError> {
    let v = json(&["list", "counters", "table", "netdev", table]).await?;
    Ok(parse_counters(&v))
}

/// How many flows of map `map` of [`super::TABLE`]-like `table` each mark holds.
pub async fn flows_by_mark(table: &str, map: &str) -> Result<HashMap<u32, usize>, NftError> {
    let v = json(&["list", "map", "netdev", table, map]).await?;
    Ok(parse_flows(&v))
}

fn spawn(args: &[&str]) -> Result<tokio::process::Child, NftError> {
    Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NftError::Missing,
            _ => NftError::Io(e),
        })
}

fn check(out: &std::process::Output) -> Result<(), NftError> {
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    // nft prints the offending line of the script after the error; the first line is the
    // reason.
    let first = err
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed without a message")
        .to_string();
    if err.contains("Operation not permitted") {
        Err(NftError::Permission(first))
    } else {
        Err(NftError::Failed(err.trim().to_string()))
    }
}

async fn json(args: &[&str]) -> Result<serde_json::Value, NftError> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let child = spawn(&full)?;
    let out = child.wait_with_output().await?;
    check(&out)?;
    serde_json::from_slice(&out.stdout).map_err(|e| NftError::Json(e.to_string()))
}

fn items(v: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    v.get("nftables")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
}

fn parse_counters(v: &serde_json::Value) -> HashMap<String, (u64, u64)> {
    items(v)
        .filter_map(|i| i.get("counter"))
        .filter_map(|c| {
            Some((
                c.get("name")?.as_str()?.to_string(),
                (c.get("packets")?.as_u64()?, c.get("bytes")?.as_u64()?),
            ))
        })
        .collect()
}

fn parse_flows(v: &serde_json::Value) -> HashMap<u32, usize> {
    let mut out = HashMap::new();
    for m in items(v).filter_map(|i| i.get("map")) {
        for e in m
            .get("elem")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            // Each element is `[key, value]`; the value is the server's mark.
            if let Some(mark) = e
                .as_array()
                .and_then(|kv| kv.get(1))
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
            {
                *out.entry(mark).or_insert(0) += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_nft_1_0_json() {
        let v: serde_json::Value = serde_json::from_str(r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"counter": {"family": "netdev", "name": "s_0000000b", "table": "tlb", "handle": 3, "packets": 7, "bytes": 420}}, {"counter": {"family": "netdev", "name": "nosrv_aa", "table": "tlb", "handle": 5, "packets": 0, "bytes": 0}}]}"#).unwrap();
        let c = parse_counters(&v);
        assert_eq!(c["s_0000000b"], (7, 420));
        assert_eq!(c["nosrv_aa"], (0, 0));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn flows_are_counted_by_mark() {
        let v: serde_json::Value = serde_json::from_str(r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"map": {"family": "netdev", "name": "flows4", "table": "tlb", "type": ["inet_service", "inet_service", "ipv4_addr"], "handle": 1, "map": "mark", "size": 262144, "flags": ["timeout"], "timeout": 900, "elem": [[{"elem": {"val": {"concat": [1234, 5551, "192.0.2.50"]}, "timeout": 900, "expires": 899}}, 11], [{"elem": {"val": {"concat": [1235, 5551, "192.0.2.50"]}, "timeout": 900, "expires": 899}}, 11], [{"elem": {"val": {"concat": [1236, 5551, "192.0.2.51"]}, "timeout": 900, "expires": 899}}, 27]]}}]}"#).unwrap();
        let f = parse_flows(&v);
        assert_eq!(f[&11], 2);
        assert_eq!(f[&27], 1);
    }

    #[test]
    fn an_empty_map_has_no_element_list() {
        let v: serde_json::Value = serde_json::from_str(r#"{"nftables": [{"map": {"family": "netdev", "name": "f", "table": "t", "type": "ipv4_addr", "handle": 1, "map": "mark"}}]}"#).unwrap();
        assert!(parse_flows(&v).is_empty());
    }
}
