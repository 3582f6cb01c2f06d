//! Each node's data dir on its own small tmpfs, so that the disk-full fault can fill one
//! node's disk without touching the machine's: a file of zeros written next to the store
//! takes the room, removing it gives the room back. Unmounted when dropped; a failing
//! run's data dirs are copied out first (`keep`), so they stay with its histories.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Size of each node's tmpfs: room for a run's stores many times over.
pub const DISK_MIB: u64 = 512;

pub struct Disks {
    dirs: Vec<PathBuf>,
    /// Copy each data dir out (to `<dir>.kept`) before unmounting: true until the run
    /// has passed its checks, so a run that fails or errors keeps its data.
    pub keep: bool,
}

impl Disks {
    /// Mount a tmpfs of [`DISK_MIB`] on each of `dirs` (created if missing).
    pub fn mount(dirs: Vec<PathBuf>) -> anyhow::Result<Disks> {
        let mut disks = Disks { dirs: Vec::new(), keep: true };
        for d in dirs {
            std::fs::create_dir_all(&d)?;
            // A campaign killed with -9 leaves its mounts: never stack a new one on them.
            let _ = Command::new("umount").arg("-l").arg(&d).output();
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={DISK_MIB}m,mode=0700"), "tmpfs"])
                .arg(&d)
                .output()
                .context("running mount")?;
            if !out.status.success() {
                bail!("mounting a tmpfs on {}: {}", d.display(), String::from_utf8_lossy(&out.stderr));
            }
            disks.dirs.push(d);
        }
        Ok(disks)
    }

    fn filler(&self, i: usize) -> PathBuf {
        self.dirs[i].join("chaos-filler")
    }

    /// Take the room on node `i`'s disk until at most `leave` bytes are free. Returns the
    /// bytes free afterwards.
    pub fn fill(&self, i: usize, leave: u64) -> anyhow::Result<u64> {
        let path = self.filler(i);
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let chunk = vec![0u8; 4 << 20];
        loop {
            let free = nanogrid::grid::disk::free_bytes(&self.dirs[i])?;
            if free <= leave {
                return Ok(free);
            }
            let n = (free - leave).min(chunk.len() as u64) as usize;
            match f.write(&chunk[..n]) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Ok(0),
                Err(e) => return Err(e).with_context(|| format!("filling {}", path.display())),
            }
        }
    }

    /// Give node `i`'s disk its room back.
    pub fn unfill(&self, i: usize) -> anyhow::Result<()> {
        match std::fs::remove_file(self.filler(i)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

fn copy_out(dir: &Path) {
    let mut kept = dir.as_os_str().to_owned();
    kept.push(".kept");
    let _ = Command::new("cp").arg("-a").arg(dir).arg(&kept).status();
}

impl Drop for Disks {
    fn drop(&mut self) {
        for d in &self.dirs {
            if self.keep {
                copy_out(d);
            }
            let _ = Command::new("umount").arg("-l").arg(d).status();
        }
    }
}
