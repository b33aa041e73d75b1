//! Racing stream opens for one client: a second open on another session when the first
//! fails or is slow to answer.

use std::time::Duration;

use crate::mux::YamuxStream;

/// Stream opens for one client, raced. The first goes to `first`. A second goes where
/// `another` says when the first fails (`hedge` false: any other session will do) or is
/// still unanswered after `hedge_after` (`hedge` true: only a session of another gateway,
/// since a silent gateway's other sessions are as silent). At most two per client, as
/// before hedging. `open` makes one attempt and keeps its session's books; it yields the
/// stream, or `None` when the attempt failed.
///
/// Returns the first stream opened, and the opens still pending then, to be run to their
/// end in the background: a silent session is still found silent and ejected, and a
/// stream opened after all is closed and handed to `unused` for the books.
pub(crate) async fn race_opens<K, Fut>(
    first: K,
    mut another: impl FnMut(&K, bool) -> Option<K>,
    open: impl Fn(K) -> Fut,
    hedge_after: Duration,
    unused: impl Fn(K) + Send + 'static,
) -> (
    Option<(K, YamuxStream)>,
    Option<impl std::future::Future<Output = ()> + Send + 'static>,
)
where
    K: Clone + Send + 'static,
    Fut: std::future::Future<Output = (K, Option<YamuxStream>)> + Send + 'static,
{
    use futures::stream::{FuturesUnordered, StreamExt};

    let mut opens = FuturesUnordered::new();
    opens.push(open(first.clone()));
    // A second open was made; the hedge timer fired (whether or not it found a session of
    // another gateway: a failure may still retry on the same gateway's other session).
    let (mut second, mut hedged) = (false, false);
    let hedge = tokio::time::sleep(hedge_after);
    tokio::pin!(hedge);
    let won = loop {
        tokio::select! {
            done = opens.next() => match done {
                Some((k, Some(stream))) => break Some((k, stream)),
                Some((k, None)) => {
                    if !second {
                        second = true;
                        if let Some(next) = another(&k, false) {
                            opens.push(open(next));
                        }
                    }
                    if opens.is_empty() {
                        break None;
                    }
                }
                None => break None,
            },
            () = &mut hedge, if !second && !hedged => {
                hedged = true;
                if let Some(next) = another(&first, true) {
                    second = true;
                    opens.push(open(next));
                }
            }
        }
    };
    let leftover = (!opens.is_empty()).then_some(async move {
        while let Some((k, stream)) = opens.next().await {
            if let Some(stream) = stream {
                drop(stream);
                unused(k);
            }
        }
    });
    (won, leftover)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::sync::mpsc;

    use crate::mux::{Mux, YamuxSession};

    /// A mux whose streams open at once, for opens that succeed; the accepting side is
    /// kept alive (and drained) by the returned handles.
    fn mux() -> (YamuxSession, YamuxSession, mpsc::Receiver<YamuxStream>) {
        use crate::mux::{MuxTuning, Side};
        let (a, b) = tokio::io::duplex(1 << 16);
        let (client, _) = YamuxSession::spawn(a, Side::Client, MuxTuning::default());
        let (server, inbound) = YamuxSession::spawn(b, Side::Server, MuxTuning::default());
        (client, server, inbound)
    }

    /// An open that answers after `after`, with a stream when `ok`.
    fn fake_open(
        mux: &YamuxSession,
        plan: &'static [(&'static str, u64, bool)],
    ) -> impl Fn(&'static str) -> futures::future::BoxFuture<'static, (&'static str, Option<YamuxStream>)>
    {
        let mux = mux.clone();
        move |k| {
            let mux = mux.clone();
            let (_, ms, ok) = plan.iter().copied().find(|p| p.0 == k).expect("planned");
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let stream = if ok { mux.open().await.ok() } else { None };
                (k, stream)
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_open_is_raced_on_another_gateway_and_still_runs_to_its_end() {
        let (client, _server, _inbound) = mux();
        // "dead" never answers within the test; "alive" answers at once.
        let open = fake_open(&client, &[("dead", 60_000, false), ("alive", 1, true)]);
        let t = tokio::time::Instant::now();
        let unused = Arc::new(Mutex::new(Vec::new()));
        let u = unused.clone();
        let (won, leftover) = race_opens(
            "dead",
            |_, hedge| hedge.then_some("alive"),
            open,
            Duration::from_millis(250),
            move |k| u.lock().expect("lock").push(k),
        )
        .await;
        assert_eq!(won.map(|(k, _)| k), Some("alive"));
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        leftover.expect("the silent open runs on").await;
        assert!(unused.lock().expect("lock").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_answered_late_is_handed_back_unused() {
        let (client, _server, _inbound) = mux();
        let open = fake_open(&client, &[("slow", 500, true), ("fast", 1, true)]);
        let unused = Arc::new(Mutex::new(Vec::new()));
        let u = unused.clone();
        let (won, leftover) = race_opens(
            "slow",
            |_, _| Some("fast"),
            open,
            Duration::from_millis(100),
            move |k| u.lock().expect("lock").push(k),
        )
        .await;
        assert_eq!(won.map(|(k, _)| k), Some("fast"));
        leftover.expect("the slow open runs on").await;
        assert_eq!(*unused.lock().expect("lock"), vec!["slow"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hedge_with_no_other_gateway_leaves_the_retry_after_a_failure() {
        let (client, _server, _inbound) = mux();
        // One gateway only: the hedge finds nobody; the first open then fails, and the
        // retry on the same gateway's other session serves the client.
        let open = fake_open(&client, &[("first", 400, false), ("same-gw", 1, true)]);
        let (won, leftover) = race_opens(
            "first",
            |_, hedge| (!hedge).then_some("same-gw"),
            open,
            Duration::from_millis(100),
            |_| {},
        )
        .await;
        assert_eq!(won.map(|(k, _)| k), Some("same-gw"));
        assert!(leftover.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn two_failures_leave_the_client_without_a_stream() {
        let (client, _server, _inbound) = mux();
        let open = fake_open(&client, &[("a", 1, false), ("b", 1, false)]);
        let mut asked = 0;
        let (won, leftover) = race_opens(
            "a",
            |_, _| {
                asked += 1;
                Some("b")
            },
            open,
            Duration::from_millis(100),
            |_| {},
        )
        .await;
        assert!(won.is_none());
        assert!(leftover.is_none());
        assert_eq!(asked, 1, "at most two opens per client");
    }
}
