//! Policy packages, registry clients, the local store and inference backends of Reflex.
//!
//! Empty on purpose: the package format and the ONNX Runtime backend arrive with the
//! "policy packages and inference backend" issue. Nothing here pretends to load a model yet.

#![forbid(unsafe_code)]
