//! SIGINT, SIGTERM and SIGHUP tear down every live lab, then exit: a test run stopped with
//! Ctrl-C, or a demo whose terminal was closed, must not leave namespaces behind.

use std::sync::{Arc, Mutex, Once, Weak};

use crate::teardown::{Inner, lock};

static LIVE: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

pub(crate) fn register(inner: &Arc<Inner>) {
    lock(&LIVE).push(Arc::downgrade(inner));
    INSTALL.call_once(|| {
        let Ok(mut signals) = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
        else {
            return;
        };
        let _ = std::thread::Builder::new()
            .name("lab-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let labs: Vec<Arc<Inner>> =
                        lock(&LIVE).iter().filter_map(Weak::upgrade).collect();
                    for lab in labs {
                        eprintln!(
                            "tether-lab: signal {sig}: stopping the processes and removing the namespaces {}-*",
                            lab.prefix
                        );
                        lab.teardown();
                    }
                    std::process::exit(128 + sig);
                }
            });
    });
}

pub(crate) fn unregister(inner: &Arc<Inner>) {
    lock(&LIVE).retain(|w| w.upgrade().is_some_and(|l| !Arc::ptr_eq(&l, inner)));
}
