//! The steps by which prognos changes files on local disk, as one ordered record, and the
//! crash points they make.
//!
//! Every durable change of a local file — the table store's objects ([`crate::durable`]'s
//! store), the catalog, role and registry files, model folders, the commit record of a
//! transaction block — goes through [`step`] before it is made. That one place serves two
//! proofs:
//!
//! * **Power loss.** A [`Recorder`] collects the steps under a folder; [`durable_image`] replays
//!   them as a power loss would: a file survives only if its directory entry was synced after it
//!   was published (and every directory created above it was too), and its bytes only if the
//!   file was synced before that. Storage tests assert that what a commit acknowledged is in
//!   that image.
//! * **Process crashes.** With `PROGNOS_CRASH_AT=n` in the environment, the server aborts the
//!   process right before the `n`-th visible step (a staged write, a directory made, a file
//!   published or removed) once [`arm`] was called — the server arms after start-up, so `n`
//!   counts the steps of client statements only. The crash tests enumerate `n` for each kind of
//!   statement and check the data dir after a restart. `PROGNOS_CRASH_TRACE=1` logs each
//!   counted step with its number. Sync steps are not crash points: a process that dies between
//!   a write and its sync leaves the same files as one that dies after it (the page cache
//!   survives a process crash), which is what the power-loss image covers.
//!
//! Hand-written because no crate offers crash points or sync recording for `std::fs` and
//! `object_store` together; it is a counter and a list.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// One change to local files, recorded before it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsStep {
    /// A new file (a staged upload, a temporary file) is created and written.
    Write(PathBuf),
    /// A file's bytes are flushed to stable storage (`fsync`).
    SyncFile(PathBuf),
    /// A directory is created.
    MakeDir(PathBuf),
    /// A written file is given its final name (rename or hard link).
    Publish {
        /// The staged name.
        from: PathBuf,
        /// The final name.
        to: PathBuf,
    },
    /// A directory's entries are flushed to stable storage.
    SyncDir(PathBuf),
    /// A file or folder is removed.
    Remove(PathBuf),
}

impl FsStep {
    /// Whether a process crash right before this step leaves different files than right after
    /// the previous one (syncs do not).
    fn is_crash_point(&self) -> bool {
        !matches!(self, FsStep::SyncFile(_) | FsStep::SyncDir(_))
    }

    /// The path the step is about (for a publish, its final name).
    fn path(&self) -> &Path {
        match self {
            FsStep::Write(p)
            | FsStep::SyncFile(p)
            | FsStep::MakeDir(p)
            | FsStep::SyncDir(p)
            | FsStep::Remove(p) => p,
            FsStep::Publish { to, .. } => to,
        }
    }
}

/// Collects the steps made under one folder, from [`Recorder::under`] until it is dropped.
#[derive(Debug)]
pub struct Recorder {
    root: PathBuf,
    steps: Arc<Mutex<Vec<FsStep>>>,
}

impl Recorder {
    /// Record every step whose path lies under `root`.
    pub fn under(root: &Path) -> Self {
        let steps = Arc::new(Mutex::new(vec![]));
        lock(recorders()).push((root.to_path_buf(), Arc::clone(&steps)));
        Self {
            root: root.to_path_buf(),
            steps,
        }
    }

    /// The steps recorded so far, in order.
    pub fn steps(&self) -> Vec<FsStep> {
        lock(&self.steps).clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        lock(recorders()).retain(|(root, s)| !(root == &self.root && Arc::ptr_eq(s, &self.steps)));
    }
}

type Recorders = Mutex<Vec<(PathBuf, Arc<Mutex<Vec<FsStep>>>)>>;

fn recorders() -> &'static Recorders {
    static RECORDERS: OnceLock<Recorders> = OnceLock::new();
    RECORDERS.get_or_init(|| Mutex::new(vec![]))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static ARMED: AtomicBool = AtomicBool::new(false);
static COUNTED: AtomicU64 = AtomicU64::new(0);

/// The crash point the environment asks for, and whether to trace.
fn settings() -> &'static (Option<u64>, bool) {
    static SETTINGS: OnceLock<(Option<u64>, bool)> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let at = std::env::var("PROGNOS_CRASH_AT")
            .ok()
            .and_then(|v| v.trim().parse().ok());
        let trace = std::env::var("PROGNOS_CRASH_TRACE").is_ok_and(|v| v == "1");
        (at, trace)
    })
}

/// Start counting crash points (the server calls this once it is ready for clients).
pub fn arm() {
    let (at, trace) = settings();
    if at.is_some() || *trace {
        ARMED.store(true, Ordering::SeqCst);
    }
}

/// Note `step` before it is made: record it, and abort the process at the requested crash
/// point.
pub fn step(step: FsStep) {
    {
        let recorders = lock(recorders());
        for (root, steps) in recorders.iter() {
            if step.path().starts_with(root) {
                lock(steps).push(step.clone());
            }
        }
    }
    if !ARMED.load(Ordering::Relaxed) || !step.is_crash_point() {
        return;
    }
    let n = COUNTED.fetch_add(1, Ordering::SeqCst) + 1;
    let (at, trace) = settings();
    if *trace {
        eprintln!("crash point {n}: {step:?}");
    }
    if *at == Some(n) {
        eprintln!("PROGNOS_CRASH_AT={n}: aborting before {step:?}");
        std::process::abort();
    }
}

/// Whether a path survives a power loss, and whether its bytes do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survival {
    /// Its name and its complete bytes survive.
    Complete,
    /// Its name survives, its bytes may not (it was not synced before it was published).
    Torn,
}

/// Replay `steps` as a power loss right after the last one: the files that are certain to be
/// there afterwards, and whether their bytes are. Directories that existed before the first
/// step are taken as durable.
pub fn durable_image(steps: &[FsStep]) -> std::collections::BTreeMap<PathBuf, Survival> {
    use std::collections::{BTreeMap, BTreeSet};
    // Files by name: whether their bytes are synced (a publish carries the flag to the name).
    let mut synced: BTreeMap<PathBuf, bool> = BTreeMap::new();
    // Names whose directory entry is not yet durable, and directories made but not yet durable.
    let mut pending: BTreeSet<PathBuf> = BTreeSet::new();
    let mut durable: BTreeSet<PathBuf> = BTreeSet::new();
    let mut new_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut durable_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for s in steps {
        match s {
            FsStep::Write(p) => {
                synced.insert(p.clone(), false);
                pending.insert(p.clone());
            }
            FsStep::SyncFile(p) => {
                synced.insert(p.clone(), true);
            }
            FsStep::MakeDir(d) => {
                new_dirs.insert(d.clone());
            }
            FsStep::Publish { from, to } => {
                let flag = synced.remove(from).unwrap_or(false);
                pending.remove(from);
                durable.remove(to);
                synced.insert(to.clone(), flag);
                pending.insert(to.clone());
            }
            FsStep::SyncDir(d) => {
                let now: Vec<PathBuf> = pending
                    .iter()
                    .filter(|p| p.parent() == Some(d.as_path()))
                    .cloned()
                    .collect();
                for p in now {
                    pending.remove(&p);
                    durable.insert(p);
                }
                for made in new_dirs.iter().filter(|m| m.parent() == Some(d.as_path())) {
                    durable_dirs.insert(made.clone());
                }
            }
            FsStep::Remove(p) => {
                synced.remove(p);
                pending.remove(p);
                durable.remove(p);
            }
        }
    }
    durable
        .into_iter()
        .filter(|p| {
            // Every directory made above the file must be durable too.
            p.ancestors()
                .skip(1)
                .all(|a| !new_dirs.contains(a) || durable_dirs.contains(a))
        })
        .map(|p| {
            let how = if synced.get(&p).copied().unwrap_or(false) {
                Survival::Complete
            } else {
                Survival::Torn
            };
            (p, how)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn a_published_file_survives_only_after_its_directory_is_synced() {
        let mut steps = vec![
            FsStep::Write(p("/d/f#1")),
            FsStep::SyncFile(p("/d/f#1")),
            FsStep::Publish {
                from: p("/d/f#1"),
                to: p("/d/f"),
            },
        ];
        assert!(durable_image(&steps).is_empty(), "no directory sync yet");
        steps.push(FsStep::SyncDir(p("/d")));
        assert_eq!(
            durable_image(&steps).get(&p("/d/f")),
            Some(&Survival::Complete)
        );
    }

    #[test]
    fn a_file_published_before_its_bytes_are_synced_is_torn() {
        let steps = vec![
            FsStep::Write(p("/d/f#1")),
            FsStep::Publish {
                from: p("/d/f#1"),
                to: p("/d/f"),
            },
            FsStep::SyncDir(p("/d")),
        ];
        assert_eq!(durable_image(&steps).get(&p("/d/f")), Some(&Survival::Torn));
    }

    #[test]
    fn a_file_in_a_new_directory_needs_that_directory_to_be_durable() {
        let mut steps = vec![
            FsStep::MakeDir(p("/d/new")),
            FsStep::Write(p("/d/new/f#1")),
            FsStep::SyncFile(p("/d/new/f#1")),
            FsStep::Publish {
                from: p("/d/new/f#1"),
                to: p("/d/new/f"),
            },
            FsStep::SyncDir(p("/d/new")),
        ];
        assert!(durable_image(&steps).is_empty(), "/d/new itself may vanish");
        steps.push(FsStep::SyncDir(p("/d")));
        assert_eq!(
            durable_image(&steps).get(&p("/d/new/f")),
            Some(&Survival::Complete)
        );
    }

    #[test]
    fn the_recorder_sees_only_its_folder() {
        let r = Recorder::under(Path::new("/recorder-test/a"));
        step(FsStep::Remove(p("/recorder-test/a/x")));
        step(FsStep::Remove(p("/recorder-test/b/x")));
        assert_eq!(r.steps(), vec![FsStep::Remove(p("/recorder-test/a/x"))]);
    }
}
