//! Helpers shared by the integration tests: spawning real servers and seeding them, and
//! running the binary.

pub mod alertmanager;
pub mod causes;
pub mod cli;
pub mod daemon;
pub mod docker;
pub mod moto;
pub mod tls;
