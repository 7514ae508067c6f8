//! stackwarden's integration tests: one binary, one module per area. They talk to real
//! servers (moto, dockerd) the way users' runs do.

mod aws;
mod host;
mod manifests;
mod support;
