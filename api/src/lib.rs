//! Hawser's API vocabulary: the Kubernetes types (from k8s-openapi), the
//! registry of served resources, selectors, defaulting and validation, patch
//! semantics, Table and OpenAPI rendering. Nothing here does I/O; the API
//! server calls it.
//!
//! # Layout
//! - [`resources`]: every served kind with its group/version/plural, scope,
//!   short names and subresources; storage keys derive from it.
//! - [`status`]: API errors as Kubernetes `Status` objects.
//! - [`selector`]: label and field selectors.
//! - [`validation`]: decoding into k8s-openapi types, defaulting, validation,
//!   and the fields each kind offers to field selectors.
//! - [`patch`]: JSON patch, merge patch, strategic merge patch, server-side apply.
//! - [`table`]: server-side `Table` output with kubectl's columns.
//! - [`openapi`]: the OpenAPI v3 documents kubectl needs for `apply` and `explain`.
//! - [`quantity`]: resource quantities (`500m`, `1Gi`): parsing, canonical form, values.
//! - [`protobuf`]: Kubernetes protobuf request bodies (kubectl's `create <kind>` generators).

pub use k8s_openapi;

pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod quantity;
pub mod resources;
pub mod selector;
pub mod status;
pub mod table;
pub mod validation;

pub use resources::ResourceInfo;
pub use status::{ApiError, FieldError};
