//! An exclusive lock on a run folder (`drpo train --out`, `drpo sft --out`, the study's folders), so
//! two processes never interleave metrics or collide in `checkpoint.tmp`.
//!
//! The lock is `DIR/drpo.lock`, held with the OS's advisory file lock (`flock(2)`, non-blocking):
//! the kernel releases it when the holder exits in any way, kill -9 included,
//! so a lock can never outlive its process. The file holds the holder's pid and command, for the
//! message the second process prints. A clean release deletes the file; a file found with content
//! but no holder is a *stale* lock (its process died): it is taken over, and the caller gets a
//! sentence saying so. To make deletion safe, the acquirer checks, once it holds the lock, that the
//! path still names the file it locked (a releaser may have deleted it in between) and retries if not.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = "drpo.lock";

/// A held lock; released (file deleted, then unlocked) on drop.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    /// holds the flock while open (never read: closing it is the release)
    _file: File,
}

impl RunLock {
    /// Takes the lock of `dir` (created if needed) for `command` (`"drpo train"`), or fails with
    /// [`Error::RunFolder`] naming the process that holds it. The second value is a sentence for the
    /// user when a stale lock of a process that died was taken over.
    pub fn acquire(dir: &Path, command: &str) -> Result<(RunLock, Option<String>)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        // a releaser may delete the file between our open and our lock: a few retries always suffice
        for _ in 0..8 {
            let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| Error::io(&path, e))?;
            match try_flock(&file) {
                Ok(true) => {}
                Ok(false) => {
                    let holder = read_holder(&mut file);
                    return Err(Error::RunFolder {
                        path: dir.to_path_buf(),
                        what: format!(
                            "in use by another process ({holder}, lock file {LOCK_FILE})\n  hint: wait for it to finish, or \
                             use another --out folder"
                        ),
                    });
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
            if !same_file(&file, &path) {
                continue; // released and deleted under us: lock the new file
            }
            let previous = read_holder_text(&mut file);
            let stale = (!previous.trim().is_empty()).then(|| {
                format!(
                    "took over the lock of {} in {}: that process is no longer running (it stopped without releasing the lock)",
                    previous.trim().replace('\n', ", "),
                    dir.display()
                )
            });
            let me = format!("pid {}\ncommand {command}\n", std::process::id());
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(me.as_bytes()))
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(&path, e))?;
            return Ok((RunLock { path, _file: file }, stale));
        }
        Err(Error::RunFolder { path: dir.to_path_buf(), what: format!("could not take the lock {LOCK_FILE}: it keeps being replaced") })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // delete while still holding the lock (an acquirer that opened the old file notices); closing
        // `file` right after this releases the lock
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: Ok(true) when taken, Ok(false) when another open file of it holds it.
#[cfg(unix)]
fn try_flock(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor owned by `file`, alive for the call; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Outside Unix there is no flock: the pid file alone (documented in NOTES.md).
#[cfg(not(unix))]
fn try_flock(_: &File) -> std::io::Result<bool> {
    Ok(true)
}

fn read_holder_text(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    text
}

/// "pid 1234, command drpo train" from the lock file, or a placeholder when it is still empty.
fn read_holder(file: &mut File) -> String {
    let text = read_holder_text(file);
    if text.trim().is_empty() {
        "a process that is just starting".to_string()
    } else {
        text.trim().replace('\n', ", ")
    }
}

/// Whether `path` still names the open `file` (same device and inode).
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("drpo-runlock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn second_holder_is_refused_and_release_deletes_the_file() {
        let dir = scratch("second");
        let (lock, note) = RunLock::acquire(&dir, "drpo train").unwrap();
        assert!(note.is_none());
        let held = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert!(held.contains(&format!("pid {}", std::process::id())) && held.contains("drpo train"), "{held}");
        // flock locks belong to the open file description: a second open in this process conflicts too
        let e = RunLock::acquire(&dir, "drpo train").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::RunFolder { .. }) && msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        drop(lock);
        assert!(!dir.join(LOCK_FILE).exists());
        let (_again, note) = RunLock::acquire(&dir, "drpo sft").unwrap();
        assert!(note.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_lock_is_taken_over_with_a_note() {
        let dir = scratch("stale");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(LOCK_FILE), "pid 999999999\ncommand drpo train\n").unwrap();
        let (_lock, note) = RunLock::acquire(&dir, "drpo train").unwrap();
        let note = note.expect("a note");
        assert!(note.contains("pid 999999999") && note.contains("no longer running"), "{note}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
