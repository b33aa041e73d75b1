//! Reading files a configuration comes from or names, bounded: regular files only, at
//! most [`MAX_FILE`] bytes, and off the runtime with a timeout.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use super::{ConfigError, ConfigErrors};

/// The largest configuration file read (and the largest file a configuration names, such
/// as a CA bundle): far beyond any real one, and a bound on `--config /dev/zero`-like
/// mistakes.
pub const MAX_FILE: u64 = 16 * 1024 * 1024;

/// How long [`off_thread`] waits for a load before giving up on it.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a regular file of at most [`MAX_FILE`] bytes. A FIFO, a device or a directory is
/// refused without blocking: the file is opened non-blocking and checked before any read.
pub fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "is not a regular file (a {}); give the path of a file",
            kind_of(&meta.file_type())
        ));
    }
    if meta.len() > MAX_FILE {
        return Err(format!(
            "is {} bytes; the limit is {MAX_FILE} (16 MiB)",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while it is read.
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!(
            "grew past the limit of {MAX_FILE} bytes (16 MiB) while read"
        ));
    }
    Ok(bytes)
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Runs `load` (reading and validating a configuration) on a thread of its own, so a file
/// on a hung mount cannot stall the runtime that serves the admin API, health checks and
/// connections; gives up after `timeout` (the thread is left to finish or hang alone).
pub async fn off_thread<T: Send + 'static>(
    file: &Path,
    timeout: Duration,
    load: impl FnOnce() -> Result<T, ConfigErrors> + Send + 'static,
) -> Result<T, ConfigErrors> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let failed = |message: String| -> ConfigErrors {
        ConfigError {
            file: file.display().to_string(),
            line: None,
            key: String::new(),
            message,
        }
        .into()
    };
    std::thread::Builder::new()
        .name("tether-config".into())
        .spawn(move || {
            let _ = tx.send(load());
        })
        .map_err(|e| failed(format!("cannot start a thread to read it: {e}")))?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(failed(
            "reading it failed (the reading thread ended)".into(),
        )),
        Err(_) => Err(failed(format!(
            "reading it took longer than {timeout:?} (a hung mount?); the running configuration is kept"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_load_that_hangs_gives_up_after_the_timeout() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let err = off_thread(
            Path::new("slow.toml"),
            Duration::from_millis(50),
            move || {
                let _ = rx.recv();
                Ok(())
            },
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("slow.toml: reading it took longer than 50ms"),
            "{err}"
        );
        drop(tx);
    }
}
