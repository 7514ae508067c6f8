//! Helpers shared by the integration tests: spawning real servers and seeding them.

pub mod docker;
pub mod moto;
