use super::*;
use std::sync::atomic::AtomicU64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Two connected loopback sockets.
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (b, _) = l.accept().await.unwrap();
    (a, b)
}

/// Deterministic bytes that differ at every offset, so a lost, repeated or reordered
/// chunk shows.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Relayed {
    client: TcpStream,
    server: TcpStream,
    task: tokio::task::JoinHandle<(Outcome, u64, u64)>,
}

/// client <-> [relay] <-> server; `early` is written by the client before the relay
/// starts, so the relay's first read finds a full buffer (the switch to splicing).
async fn relayed(splice: bool, early: &[u8]) -> Relayed {
    let t = Duration::from_secs(20);
    relayed_with(splice, early, t, t).await
}

async fn relayed_with(
    splice: bool,
    early: &[u8],
    client_timeout: Duration,
    server_timeout: Duration,
) -> Relayed {
    let (mut client, proxy_in) = pair().await;
    let (proxy_out, server) = pair().await;
    client.write_all(early).await.unwrap();
    let task = tokio::spawn(async move {
        let up = AtomicU64::new(0);
        let down = AtomicU64::new(0);
        let count_up = |n| {
            up.fetch_add(n, Ordering::Relaxed);
        };
        let count_down = |n| {
            down.fetch_add(n, Ordering::Relaxed);
        };
        let stop = CancellationToken::new();
        let o = relay_with(
            &proxy_in,
            &proxy_out,
            client_timeout,
            server_timeout,
            &count_up,
            &count_down,
            &stop,
            splice,
        )
        .await;
        (o, up.into_inner(), down.into_inner())
    });
    Relayed {
        client,
        server,
        task,
    }
}

async fn bulk_both_ways(splice: bool) {
    const LEN: usize = 8 << 20;
    let up_data = pattern(1, LEN);
    let down_data = pattern(2, LEN);
    let early = 256 * 1024;
    let r = relayed(splice, &up_data[..early]).await;
    let (mut cr, mut cw) = r.client.into_split();
    let (mut sr, mut sw) = r.server.into_split();
    let up_rest = up_data[early..].to_vec();
    let down_copy = down_data.clone();
    // Both directions at once, each half-closed when done.
    let client_send = tokio::spawn(async move {
        cw.write_all(&up_rest).await.unwrap();
        cw.shutdown().await.unwrap();
    });
    let server_send = tokio::spawn(async move {
        sw.write_all(&down_copy).await.unwrap();
        sw.shutdown().await.unwrap();
    });
    let mut at_server = Vec::with_capacity(LEN);
    let mut at_client = Vec::with_capacity(LEN);
    let (a, b) = tokio::join!(
        sr.read_to_end(&mut at_server),
        cr.read_to_end(&mut at_client)
    );
    a.unwrap();
    b.unwrap();
    client_send.await.unwrap();
    server_send.await.unwrap();
    assert!(at_server == up_data, "client to server bytes differ");
    assert!(at_client == down_data, "server to client bytes differ");
    let (o, up, down) = tokio::time::timeout(Duration::from_secs(10), r.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.end, End::Done);
    assert_eq!((o.up, o.down), (LEN as u64, LEN as u64));
    assert_eq!((up, down), (LEN as u64, LEN as u64));
}

#[tokio::test]
async fn bulk_both_ways_arrives_intact_when_spliced() {
    bulk_both_ways(true).await;
}

#[tokio::test]
async fn bulk_both_ways_arrives_intact_when_copied() {
    bulk_both_ways(false).await;
}

/// The common short exchange: a request, a response, the server closes. The response
/// and the FIN may leave in one segment (MSG_MORE); the client must get all of it and
/// then end of stream, and the relay must end `Done` once the client closes too.
async fn request_response_close(splice: bool) {
    for round in 0..50 {
        let mut r = relayed(splice, b"").await;
        let req = format!("GET /{round} HTTP/1.1\r\n\r\n");
        r.client.write_all(req.as_bytes()).await.unwrap();
        let mut got = vec![0u8; req.len()];
        r.server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, req.as_bytes());
        let resp = pattern(round, 300 + round as usize * 7);
        r.server.write_all(&resp).await.unwrap();
        drop(r.server);
        let mut at_client = Vec::new();
        r.client.read_to_end(&mut at_client).await.unwrap();
        assert!(at_client == resp, "round {round}: response differs");
        drop(r.client);
        let (o, _, _) = tokio::time::timeout(Duration::from_secs(10), r.task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.end, End::Done, "round {round}");
        assert_eq!((o.up, o.down), (req.len() as u64, resp.len() as u64));
    }
}

#[tokio::test]
async fn request_response_close_delivers_everything_spliced() {
    request_response_close(true).await;
}

#[tokio::test]
async fn request_response_close_delivers_everything_copied() {
    request_response_close(false).await;
}

/// Bytes and FIN already in when the relay first reads: the end is taken from the FIN
/// reported with the readiness, without a read of its own. Every byte must still go
/// through, around the buffer's size too (a full read is not a short one).
#[tokio::test]
async fn bytes_and_fin_known_before_the_first_read_all_arrive() {
    for len in [1, 1000, BUF_SIZE - 1, BUF_SIZE, BUF_SIZE + 1] {
        let (mut client, proxy_in) = pair().await;
        let (proxy_out, mut server) = pair().await;
        let data = pattern(len as u64, len);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        // Until the poller has reported the FIN (bounded: were it never reported, the
        // relay below must still deliver everything, only by the longer path).
        for _ in 0..10_000 {
            if fin_reported(&proxy_in) {
                break;
            }
            tokio::task::yield_now().await;
        }
        let stop = CancellationToken::new();
        let relay = async {
            let t = Duration::from_secs(20);
            relay_with(&proxy_in, &proxy_out, t, t, &|_| {}, &|_| {}, &stop, false).await
        };
        let check = async {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert!(got == data, "{len} bytes: what arrived differs");
            drop(server);
        };
        let (o, ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(relay, check)
        })
        .await
        .expect("relay did not end");
        assert_eq!(
            (o.end, o.up, o.down),
            (End::Done, len as u64, 0),
            "{len} bytes"
        );
        drop(writer.await.unwrap());
    }
}

/// Many small messages back and forth on one connection (kept-alive traffic): the
/// short-read path must never lose a wake-up.
#[tokio::test]
async fn ping_pong_never_stalls() {
    let mut r = relayed(true, b"").await;
    for i in 0..2000u32 {
        let msg = i.to_be_bytes();
        r.client.write_all(&msg).await.unwrap();
        let mut got = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), r.server.read_exact(&mut got))
            .await
            .expect("server side stalled")
            .unwrap();
        assert_eq!(got, msg);
        r.server.write_all(&got).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), r.client.read_exact(&mut got))
            .await
            .expect("client side stalled")
            .unwrap();
        assert_eq!(got, msg);
    }
    drop(r.client);
    drop(r.server);
    let (o, _, _) = tokio::time::timeout(Duration::from_secs(10), r.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((o.up, o.down), (8000, 8000));
}

/// Memory per idle connection is mostly this future: keep it small (it is held for
/// every open connection, ten thousand of them on a busy balancer).
#[tokio::test]
async fn relay_future_stays_small() {
    let (a, b) = pair().await;
    let stop = CancellationToken::new();
    let f = relay(
        &a,
        &b,
        Duration::from_secs(1),
        Duration::from_secs(1),
        &|_| {},
        &|_| {},
        &stop,
        true,
    );
    let size = std::mem::size_of_val(&f);
    eprintln!("relay future: {size} bytes");
    assert!(size <= 4096, "relay future grew to {size} bytes");
}

const SHORT: Duration = Duration::from_millis(200);
const LONG: Duration = Duration::from_secs(20);

async fn outcome(r: tokio::task::JoinHandle<(Outcome, u64, u64)>) -> Outcome {
    tokio::time::timeout(Duration::from_secs(10), r)
        .await
        .expect("relay did not end")
        .unwrap()
        .0
}

#[tokio::test]
async fn a_silent_connection_times_out_blaming_the_silent_side() {
    let r = relayed_with(true, b"", SHORT, LONG).await;
    assert_eq!(outcome(r.task).await.end, End::ClientTimeout);
    let r = relayed_with(true, b"", LONG, SHORT).await;
    assert_eq!(outcome(r.task).await.end, End::ServerTimeout);
}

#[tokio::test]
async fn a_server_that_stops_reading_is_blamed() {
    // The client keeps sending, the server reads nothing: the relay ends up waiting to
    // write to the server, and the (short) server timeout ends it, not the client's.
    let r = relayed_with(false, b"", LONG, SHORT).await;
    let (_cr, mut cw) = r.client.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        // Bounded: far more than the socket buffers hold, so the relay blocks.
        for _ in 0..4096 {
            if cw.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let o = outcome(r.task).await;
    assert_eq!(o.end, End::ServerTimeout);
    assert!(o.up > 0);
    writer.abort();
    drop(r.server);
}

#[tokio::test]
async fn a_half_closed_client_is_not_cut_by_its_own_timeout() {
    // The client sent its request and half-closed; the server takes longer than the
    // client timeout to answer. Only the server's timeout applies now.
    let mut r = relayed_with(true, b"", SHORT, LONG).await;
    r.client.write_all(b"request").await.unwrap();
    r.client.shutdown().await.unwrap();
    let mut got = Vec::new();
    r.server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"request");
    // The scenario itself: a slow server, three client timeouts long.
    tokio::time::sleep(SHORT * 3).await;
    r.server.write_all(b"response").await.unwrap();
    drop(r.server);
    let mut at_client = Vec::new();
    r.client.read_to_end(&mut at_client).await.unwrap();
    assert_eq!(at_client, b"response");
    let o = outcome(r.task).await;
    assert_eq!(o.end, End::Done);
    assert_eq!((o.up, o.down), (7, 8));
}
