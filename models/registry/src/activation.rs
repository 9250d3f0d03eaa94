//! The activation transaction: which policy version is active, which ones came before, and
//! where an update in progress stands. Persisted in `<store>/activation.json`, rewritten
//! atomically (temporary file → fsync → rename → fsync of the directory) at every step, so
//! after a crash or power loss at any point the record is either the old one or the new one.
//!
//! ```text
//!  downloaded → verified → prepared → validated → swapped → health → committed
//!       └──────────┴───────────┴───────────┴──────────┴────────┴──► rolled back
//! ```
//! Recovery rule: an update that had not reached `committed` when the process died is rolled
//! back on the next start — the previous version is still the active one, complete on disk (the
//! store never deletes the active or previous versions). A version is active only once committed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::PackageError;
use crate::store::{Store, sync_dir};

/// One installed policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub name: String,
    pub version: String,
    pub index_digest: String,
    pub manifest_digest: String,
    /// The materialized package directory in the store.
    pub dir: PathBuf,
}

/// Steps of an update in progress, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Every blob digest-checked in the store.
    Downloaded,
    /// Signature, platform, schema and compatibility with the running configuration.
    Verified,
    /// Backend session built, engine cache warm.
    Prepared,
    /// Golden pairs pass; outputs finite.
    Validated,
    /// Handed to the inference worker at a chunk boundary; its actions reach the loop.
    Swapped,
    /// Inside the health window.
    Health,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Downloaded,
        Step::Verified,
        Step::Prepared,
        Step::Validated,
        Step::Swapped,
        Step::Health,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Downloaded => "downloaded",
            Step::Verified => "verified",
            Step::Prepared => "prepared",
            Step::Validated => "validated",
            Step::Swapped => "swapped",
            Step::Health => "health",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|step| step.name() == s)
    }
}

/// An update in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub version: Version,
    pub step: Step,
}

/// The last rollback, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub index_digest: String,
    pub version: String,
    pub at_step: Step,
    pub reason: String,
}

/// The persisted record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub active: Option<Version>,
    /// Earlier committed versions, newest first (kept on disk for rollback).
    pub previous: Vec<Version>,
    pub pending: Option<Pending>,
    pub last_rollback: Option<Rollback>,
    /// Index digests refused or rolled back: not retried until the channel moves on.
    #[serde(default)]
    pub refused: Vec<String>,
}

/// The activation record of a store, and the only writer of it.
#[derive(Debug)]
pub struct Activation {
    path: PathBuf,
    record: Record,
    keep_previous: usize,
    /// Test hook (`REFLEX_TEST_PAUSE_AT=<step>|committed`): after persisting that step, say so
    /// on stderr and wait to be killed.
    pause_at: Option<String>,
}

impl Activation {
    /// Opens (or creates) the record of `store`, keeping `keep_previous` earlier versions. An
    /// update interrupted before `committed` is rolled back here; returns it if there was one.
    pub fn open(
        store: &Store,
        keep_previous: usize,
    ) -> Result<(Self, Option<Pending>), PackageError> {
        let (mut record, interrupted) = Self::peek(store)?;
        if let Some(p) = &interrupted {
            record.last_rollback = Some(Rollback {
                index_digest: p.version.index_digest.clone(),
                version: p.version.version.clone(),
                at_step: p.step,
                reason: "interrupted (process stopped before commit)".into(),
            });
        }
        let activation = Self {
            path: store.root.join("activation.json"),
            record,
            keep_previous,
            pause_at: std::env::var("REFLEX_TEST_PAUSE_AT").ok(),
        };
        if interrupted.is_some() {
            activation.persist()?;
        }
        Ok((activation, interrupted))
    }

    /// The record as the next start will see it (an update in progress or interrupted taken
    /// out and returned separately), without
    /// writing anything: safe to call while a runtime owns the store. Checks that the active
    /// version is complete on disk.
    pub fn peek(store: &Store) -> Result<(Record, Option<Pending>), PackageError> {
        let path = store.root.join("activation.json");
        let mut record: Record = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| PackageError::Parse {
                file: path.clone(),
                problem: format!(
                    "{e}; the activation record is damaged: restore it from a backup or remove it and pull the policy again"
                ),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::default(),
            Err(source) => return Err(PackageError::Io { file: path, source }),
        };
        let interrupted = record.pending.take();
        // The active version must be complete on disk: its files hash to policy.json's digests.
        if let Some(active) = &record.active {
            let package = reflex_policy::PolicyPackage::open(&active.dir)?;
            package.verify_files()?;
        }
        Ok((record, interrupted))
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    pub fn active(&self) -> Option<&Version> {
        self.record.active.as_ref()
    }

    /// Starts an update: `version` is downloaded (all blobs digest-checked in the store).
    pub fn begin(&mut self, version: Version) -> Result<(), PackageError> {
        self.record.pending = Some(Pending {
            version,
            step: Step::Downloaded,
        });
        self.persist()?;
        self.maybe_pause(Step::Downloaded.name());
        Ok(())
    }

    /// Moves the update in progress to `step` (forward only).
    pub fn advance(&mut self, step: Step) -> Result<(), PackageError> {
        let pending = self.record.pending.as_mut().ok_or_else(|| {
            PackageError::Registry(format!(
                "activation: no update in progress to move to {}",
                step.name()
            ))
        })?;
        if step <= pending.step {
            return Err(PackageError::Registry(format!(
                "activation: cannot go from {} back to {}",
                pending.step.name(),
                step.name()
            )));
        }
        pending.step = step;
        self.persist()?;
        self.maybe_pause(step.name());
        Ok(())
    }

    /// The update in progress becomes the active version; the old one becomes previous.
    pub fn commit(&mut self) -> Result<Version, PackageError> {
        let pending = self.record.pending.take().ok_or_else(|| {
            PackageError::Registry("activation: no update in progress to commit".into())
        })?;
        if let Some(old) = self.record.active.take() {
            self.record
                .previous
                .retain(|v| v.manifest_digest != old.manifest_digest);
            self.record.previous.insert(0, old);
            self.record.previous.truncate(self.keep_previous);
        }
        self.record
            .previous
            .retain(|v| v.manifest_digest != pending.version.manifest_digest);
        self.record.active = Some(pending.version.clone());
        self.persist()?;
        self.maybe_pause("committed");
        Ok(pending.version)
    }

    /// Abandons the update in progress: the active version stays (or is restored) as it was.
    pub fn rollback(&mut self, reason: &str) -> Result<Option<Pending>, PackageError> {
        let pending = self.record.pending.take();
        if let Some(p) = &pending {
            self.record.last_rollback = Some(Rollback {
                index_digest: p.version.index_digest.clone(),
                version: p.version.version.clone(),
                at_step: p.step,
                reason: reason.into(),
            });
            self.refuse(&p.version.index_digest);
        }
        self.persist()?;
        Ok(pending)
    }

    /// Remembers an index digest that must not be tried again (bounded list).
    pub fn refuse(&mut self, index_digest: &str) {
        if !self.record.refused.iter().any(|d| d == index_digest) {
            self.record.refused.push(index_digest.into());
            if self.record.refused.len() > 32 {
                self.record.refused.remove(0);
            }
        }
    }

    pub fn is_refused(&self, index_digest: &str) -> bool {
        self.record.refused.iter().any(|d| d == index_digest)
    }

    /// Manifest and index digests the store must keep: active, previous, pending.
    pub fn keep_set(&self) -> Vec<String> {
        let r = &self.record;
        r.active
            .iter()
            .chain(&r.previous)
            .chain(r.pending.as_ref().map(|p| &p.version))
            .flat_map(|v| [v.manifest_digest.clone(), v.index_digest.clone()])
            .collect()
    }

    pub fn persist(&self) -> Result<(), PackageError> {
        let io = |file: &Path| {
            let file = file.to_path_buf();
            move |source| PackageError::Io { file, source }
        };
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.record).expect("serializable");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")))
    }

    fn maybe_pause(&self, step: &str) {
        if self.pause_at.as_deref() == Some(step) {
            eprintln!("reflex: test hook: paused at {step}");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(store: &Store, name: &str) -> Version {
        let dir = store.root.join("packages").join(name);
        Version {
            name: "demo".into(),
            version: name.into(),
            index_digest: format!("sha256:{}", name.repeat(64)),
            manifest_digest: format!("sha256:{}", name.repeat(64)),
            dir,
        }
    }

    #[test]
    fn steps_only_go_forward_and_interrupted_updates_roll_back_on_open() {
        let dir = std::env::temp_dir().join(format!("reflex-activation-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let (mut a, none) = Activation::open(&store, 2).unwrap();
        assert!(none.is_none());
        a.begin(version(&store, "a")).unwrap();
        a.advance(Step::Verified).unwrap();
        assert!(a.advance(Step::Downloaded).is_err());
        a.advance(Step::Health).unwrap();
        // Not committed: reopening rolls it back and nothing is active.
        drop(a);
        let (a, interrupted) = Activation::open(&store, 2).unwrap();
        assert_eq!(interrupted.unwrap().step, Step::Health);
        assert!(a.active().is_none());
        assert_eq!(
            a.record().last_rollback.as_ref().unwrap().at_step,
            Step::Health
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
