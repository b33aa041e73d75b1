//! Reading BIRD's protocol states over its control socket (the text protocol `birdc`
//! speaks), for metrics and `/api/state`.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// One protocol instance of `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Protocol {
    /// Its name in BIRD's configuration (`upstream`, `kernel1`).
    pub name: String,
    /// Its kind (`BGP`, `Kernel`, `BFD`, `Device`, `Static`).
    pub proto: String,
    /// `up`, `start`, `down`, ...
    pub state: String,
    /// What BIRD adds (`Established`, `Active`, `Connect`, an error).
    pub info: String,
}

/// Failures talking to BIRD.
#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    /// The socket could not be used.
    #[error("BIRD control socket {path}: {source}")]
    Io {
        /// The socket's path.
        path: String,
        /// The error from the OS.
        #[source]
        source: std::io::Error,
    },
    /// BIRD did not answer in time.
    #[error("BIRD control socket {0}: no answer within 1 s")]
    Timeout(String),
    /// BIRD answered with an error code.
    #[error("BIRD: {0}")]
    Refused(String),
}

/// Asks BIRD for `show protocols`.
pub async fn protocols(socket: &Path) -> Result<Vec<Protocol>, BirdError> {
    let path = socket.display().to_string();
    let io = |source| BirdError::Io {
        path: path.clone(),
        source,
    };
    let talk = async {
        let mut s = UnixStream::connect(socket).await.map_err(io)?;
        let (r, mut w) = s.split();
        let mut lines = BufReader::new(r).lines();
        // The greeting (`0001 BIRD 2.0.12 ready.`) comes first.
        lines.next_line().await.map_err(io)?;
        w.write_all(b"show protocols\n").await.map_err(io)?;
        let mut reply = Vec::new();
        while let Some(l) = lines.next_line().await.map_err(io)? {
            let done = is_last(&l);
            reply.push(l);
            if done {
                break;
            }
        }
        parse(&reply)
    };
    tokio::time::timeout(Duration::from_secs(1), talk)
        .await
        .map_err(|_| BirdError::Timeout(path.clone()))?
}

/// A line `NNNN text` (a space after the code, not `-`) ends the reply.
fn is_last(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b' '
}

/// Parses the reply to `show protocols`. Each line starts with a four-digit code and `-`
/// (more follows) or a space (the last line); a line continuing the previous code starts
/// with a space instead. Code 1002 is a protocol row, 2002 the header, 0000 the end, and
/// codes 8000 and up are errors.
pub fn parse(lines: &[String]) -> Result<Vec<Protocol>, BirdError> {
    let mut code = 0u32;
    let mut out = Vec::new();
    for l in lines {
        let b = l.as_bytes();
        let text = if b.len() >= 4 && b[..4].iter().all(u8::is_ascii_digit) {
            code = b[..4].iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
            // After the code comes '-' or ' ' (one byte), then the text.
            l.get(5..).unwrap_or("")
        } else {
            l.strip_prefix(' ').unwrap_or(l)
        };
        if code >= 8000 {
            return Err(BirdError::Refused(text.trim().to_string()));
        }
        if code != 1002 {
            continue;
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.len() < 4 {
            continue;
        }
        // The "since" column is a time, or a date and a time for older changes.
        let since = if words.get(4).is_some_and(|w| w.contains('-')) {
            2
        } else {
            1
        };
        out.push(Protocol {
            name: words[0].to_string(),
            proto: words[1].to_string(),
            state: words[3].to_string(),
            info: words.get(4 + since..).unwrap_or(&[]).join(" "),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn reads_a_bird_2_show_protocols_reply() {
        // As BIRD 2.0.12 sends it: the code on the first line of a run only.
        let reply = lines(
            "2002-Name       Proto      Table      State  Since         Info\n\
             1002-device1    Device     ---        up     03:47:46.998  \n \
             tether     Kernel     master4    up     03:47:46.998  \n \
             upstream   BGP        ---        up     2026-12-05 23:10:02  Established   \n \
             bfd1       BFD        ---        up     03:47:46.998  \n \
             spare      BGP        ---        start  03:47:50.001  Active        Socket: Connection refused\n\
             0000 ",
        );
        let p = parse(&reply).unwrap();
        assert_eq!(p.len(), 5);
        assert_eq!(
            p[2],
            Protocol {
                name: "upstream".into(),
                proto: "BGP".into(),
                state: "up".into(),
                info: "Established".into(),
            }
        );
        assert_eq!(p[4].state, "start");
        assert_eq!(p[4].info, "Active Socket: Connection refused");
        assert!(is_last("0000 "));
        assert!(!is_last("1002-device1"));
    }

    #[test]
    fn odd_lines_are_not_codes_and_do_not_panic() {
        let reply = lines("+123 async\n1002\u{e9}x\n9999\n0000 ");
        assert!(parse(&reply).is_err(), "9999 is an error code");
        let reply = lines("+123 async\n1002-\u{e9}\n0000 ");
        assert_eq!(parse(&reply).unwrap(), vec![]);
    }

    #[test]
    fn an_error_code_is_an_error() {
        let reply = lines("8001 Access denied");
        assert!(matches!(parse(&reply), Err(BirdError::Refused(m)) if m == "Access denied"));
    }
}
