//! Helpers shared by the integration tests: spawning real servers and seeding them, running
//! the binary, and the AWS world the provider tests act on.

pub mod alertmanager;
pub mod causes;
pub mod cli;
pub mod daemon;
pub mod docker;
pub mod files;
pub mod moto;
pub mod tcp;
pub mod thread;
pub mod tls;
pub mod world;
