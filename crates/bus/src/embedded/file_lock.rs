//! An exclusive lock on a file beside the log, so two processes never run the same bus
//! (both would hand out the same messages and fight over ids).

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::BusError;

/// Held for as long as the bus is open; the OS releases it when the file closes,
/// including when the process is killed.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock without waiting, or says who to blame.
    pub fn acquire(path: &Path) -> Result<Self, BusError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| {
                BusError::Unavailable(format!("opening bus lock {}: {e}", path.display()))
            })?;
        try_lock_exclusive(&file).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                BusError::Unavailable(format!(
                    "bus lock {} is held: another Vigía process (or bus) has this bus open",
                    path.display()
                ))
            } else {
                BusError::Unavailable(format!("locking {}: {e}", path.display()))
            }
        })?;
        Ok(Self { _file: file })
    }
}

#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor number; `file` keeps it open for the call.
    // flock (not fcntl) locks belong to this open file, so SQLite's own fcntl locks on
    // the log are unaffected, and a second open in this same process conflicts too.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> std::io::Result<()> {
    // Other platforms rely on the operator not starting two processes on one data dir.
    Ok(())
}
