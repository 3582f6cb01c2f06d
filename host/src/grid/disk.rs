//! Room on the data dir's disk. A node refuses kv writes while its disk has less than
//! a minimum free (`--min-free-mib`): they fail at once with [`DiskFull`], which names
//! the directory and the fix, instead of reaching RocksDB and failing there (a failed
//! log write stops RocksDB's writes until it recovers, and costs a partition primary
//! its role). The room kept free is for what must go on writing when kv writes cannot:
//! Raft entries, votes, fences, flushes and compactions.
//!
//! A disk that fills up completely anyway (another program, a burst larger than the
//! margin) makes RocksDB fail with "No space left on device"; [`is_no_space`] turns that
//! into the same error. RocksDB's log writer keeps such an error, so `rocks.rs` closes
//! the store and opens it again once the disk has room; the node does not restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Room a node keeps free on its data dir's disk unless told otherwise.
pub const DEFAULT_MIN_FREE: u64 = 64 << 20;

/// How long a measurement of free space is trusted: writes ask often, the disk fills
/// slowly compared to this.
const MEASURED_FOR: Duration = Duration::from_millis(100);

/// Why a write was refused: the disk under the data dir is (nearly) full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFull {
    pub dir: PathBuf,
    /// Bytes free when it was measured.
    pub free: u64,
    pub min_free: u64,
}

impl std::fmt::Display for DiskFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lower = if self.min_free > 0 { " (or lower --min-free-mib)" } else { "" };
        write!(
            f,
            "the disk of data dir {} is full ({} MiB free, the node keeps {} MiB free): writes are refused \
             until there is room; free space on that disk{lower} and writes resume by themselves",
            self.dir.display(),
            self.free >> 20,
            self.min_free >> 20
        )
    }
}

/// Free space on the disk of one directory, measured at most every `MEASURED_FOR`.
pub struct DiskSpace {
    dir: PathBuf,
    min_free: u64,
    last: Mutex<Option<(Instant, u64)>>,
}

impl DiskSpace {
    pub fn new(dir: &Path, min_free: u64) -> Self {
        DiskSpace { dir: dir.to_path_buf(), min_free, last: Mutex::new(None) }
    }

    /// Bytes free for an unprivileged writer, measured now or recently. A disk that
    /// cannot be measured counts as having room (the write itself will say otherwise).
    pub fn free(&self) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some((at, free)) if at.elapsed() < MEASURED_FOR => free,
            _ => {
                let free = free_bytes(&self.dir).unwrap_or(u64::MAX);
                *last = Some((Instant::now(), free));
                free
            }
        }
    }

    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// `Err` when the disk has less than the minimum free.
    pub fn check(&self) -> Result<(), DiskFull> {
        let free = self.free();
        if free < self.min_free { Err(self.full(free)) } else { Ok(()) }
    }

    /// The error for a write refused or failed for want of space.
    pub fn full(&self, free: u64) -> DiskFull {
        DiskFull { dir: self.dir.clone(), free, min_free: self.min_free }
    }

    /// Forget the last measurement: RocksDB just said the disk is full.
    pub fn forget(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Free bytes for unprivileged writers on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte in the data dir's path"))?;
    // SAFETY: `path` is a valid NUL-terminated string and `st` a properly sized,
    // writable statvfs that the call fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Whether a RocksDB error is the disk running out of space.
pub fn is_no_space(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("NoSpace") || message.contains("No space")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_below_the_minimum_is_refused_with_the_dir_and_the_fix() {
        let dir = std::env::temp_dir();
        assert!(DiskSpace::new(&dir, 0).check().is_ok());
        let full = DiskSpace::new(&dir, u64::MAX).check().unwrap_err();
        assert_eq!(full.dir, dir);
        let text = full.to_string();
        assert!(text.contains(&dir.display().to_string()) && text.contains("free space on that disk"), "{text}");
        assert!(free_bytes(&dir).unwrap() > 0);
        assert!(is_no_space("IO error: No space left on device: While appending to file: /d/000012.log"));
        assert!(!is_no_space("Corruption: block checksum mismatch"));
    }
}
