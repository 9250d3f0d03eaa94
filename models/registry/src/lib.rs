//! Policy packages as OCI artifacts and the robot's side of a registry: the OCI image layout
//! (`reflex pack`), ed25519 signatures stored as referrers (`sha256-<hex>` tag fallback for
//! registries without the referrers API), the registry client (`reflex push/pull`), the
//! content-addressed local store, and the activation record that makes a hot swap a
//! transaction across power loss.
//!
//! # Guarantees
//! - Nothing unverified is used: every blob's digest is checked before it is renamed into the
//!   store; an artifact needs a signature from a trusted key unless `allow_unsigned` says so.
//! - The activation record is written with write-temp, fsync, rename, fsync-dir: after a crash
//!   it names either the old or the new version, never a half-installed one.
//! - Errors are [`PackageError`]s whose messages start with what failed (`registry: …`,
//!   `signature: …`) and name the reference or file.
//!
//! # Config keys
//! None of its own: `[updates]` (channel, store, trusted keys) belongs to the model manager
//! (`reflex_runner::updates::UpdatesConfig`), which calls this crate.
//!
//! # Example
//! ```no_run
//! use reflex_registry::{oci, store::Store};
//! let package = reflex_policy::PolicyPackage::open("models/demo/reflex-demo-vla".as_ref())?;
//! let layout = oci::Layout::open_or_create("/tmp/layout".as_ref())?;
//! oci::pack(&package, &layout, "0.1.0")?;
//! let store = Store::open("/tmp/store".as_ref())?;
//! # let _ = store;
//! # Ok::<(), reflex_policy::PackageError>(())
//! ```

// No `unsafe` here.
#![forbid(unsafe_code)]

pub mod activation;
pub mod oci;
pub mod registry;
pub mod store;
#[doc(hidden)]
pub mod testing;

pub use reflex_policy::PackageError;
pub(crate) use reflex_policy::{MANIFEST_FILE, PolicyPackage};
