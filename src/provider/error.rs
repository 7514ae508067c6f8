//! Errors as the engine sees them: whatever failed in a provider reaches the engine with a
//! class, and the class decides the policy (retry with backoff, or wait for a person).

use std::error::Error as StdError;

/// A boxed cause, kept whole for the source chain.
pub type Source = Box<dyn StdError + Send + Sync + 'static>;

/// How a failure should be treated by whoever decides what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Worth trying again soon: throttling, a 5xx, a timeout, a refused or dropped
    /// connection, a conflict with a concurrent change.
    Transient,
    /// Trying again changes nothing until someone acts: access denied, an invalid
    /// parameter, a resource owned by someone else.
    Permanent,
    /// The thing named does not exist (any more).
    NotFound,
}

impl ErrorClass {
    /// The word used in status, logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::NotFound => "notfound",
        }
    }

    /// True when trying again soon may succeed. A vanished resource counts: the next
    /// observe sees it gone and plans accordingly.
    pub fn is_retryable(self) -> bool {
        !matches!(self, ErrorClass::Permanent)
    }
}

/// What a provider's failure is: its own typed error, classified.
pub trait Classify: StdError + Send + Sync + 'static {
    /// How to treat it.
    fn class(&self) -> ErrorClass;
}

/// A provider failed to observe its world, or one resource in it.
#[derive(Debug, thiserror::Error)]
#[error("{provider}: {source}")]
pub struct ProviderError {
    /// Which provider (`aws`, `host`).
    pub provider: &'static str,
    /// How to treat it.
    pub class: ErrorClass,
    /// The provider's own error.
    #[source]
    pub source: Source,
}

impl ProviderError {
    /// Wraps a provider's typed error, keeping its class.
    pub fn of<E: Classify>(provider: &'static str, err: E) -> Self {
        ProviderError {
            provider,
            class: err.class(),
            source: Box::new(err),
        }
    }

    /// An error with no typed cause (a precondition the provider checks itself).
    pub fn plain(provider: &'static str, class: ErrorClass, message: impl Into<String>) -> Self {
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
