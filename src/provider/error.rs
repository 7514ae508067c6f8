//! Errors as the engine sees them: whatever failed in a provider reaches the engine with a
//! class, and the class decides the policy (retry with backoff, or wait for a person).

use std::error::Error as StdError;

/// A boxed cause, kept whole for the source chain.
pub type Source = Box<dyn StdError + Send + Sync + 'static>;

// The class and the world are plain data that plans carry: they live with the plan.
pub use crate::plan::{ErrorClass, World};

/// What a provider's failure is: its own typed error, classified.
pub trait Classify: StdError + Send + Sync + 'static {
    /// How to treat it.
    fn class(&self) -> ErrorClass;
}

/// A provider failed to observe its world, or one resource in it.
#[derive(Debug, thiserror::Error)]
#[error("{provider}: {source}")]
pub struct ProviderError {
    /// Which world's provider.
    pub provider: World,
    /// How to treat it.
    pub class: ErrorClass,
    /// The provider's own error.
    #[source]
    pub source: Source,
}

impl ProviderError {
    /// Wraps a provider's typed error, keeping its class.
    pub fn of<E: Classify>(provider: World, err: E) -> Self {
        ProviderError {
            provider,
            class: err.class(),
            source: Box::new(err),
        }
    }

    /// An error with no typed cause (a precondition the provider checks itself).
    pub fn plain(provider: World, class: ErrorClass, message: impl Into<String>) -> Self {
        ProviderError {
            provider,
            class,
            source: message.into().into(),
        }
    }
}

/// A failed write step, for the engine: the sentence people read and the class that
/// decides when it is tried again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    /// How to treat it.
    pub class: ErrorClass,
    /// For people.
    pub message: String,
}

impl From<ProviderError> for crate::plan::ProviderFailure {
    fn from(e: ProviderError) -> Self {
        crate::plan::ProviderFailure::new(e.provider, e.class, e.source)
    }
}

impl StepError {
    /// A failure the provider found itself (a missing input, a refused precondition): it
    /// does not go away by trying again.
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError {
            class: ErrorClass::Permanent,
            message: message.into(),
        }
    }
}

impl<E: Classify> From<E> for StepError {
    fn from(err: E) -> Self {
        StepError {
            class: err.class(),
            message: err.to_string(),
        }
    }
}

/// A provider's own sentence (a missing input, a refused precondition): permanent.
impl From<String> for StepError {
    fn from(message: String) -> Self {
        StepError::permanent(message)
    }
}
