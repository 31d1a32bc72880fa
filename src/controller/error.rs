//! What a reconcile can fail with, and how it is told apart: a conflict (the cache was
//! behind, planned again at once) from a failure (logged, counted, retried).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("reading from the API server")]
    Read(#[source] kube::Error),
    #[error("writing {0} {1}")]
    Write(&'static str, String, #[source] kube::Error),
    /// The Canary changed after this reconcile read it from the cache (most often: the
    /// cache did not hold the previous reconcile's status yet). Nothing was written; the
    /// next reconcile plans from the newer object, so a decision is never taken twice.
    #[error("the Canary changed since it was read; planning again from the newer object")]
    Conflict,
    #[error("routing traffic")]
    Route(#[from] crate::router::Error),
    #[error("reverting on deletion: {0}")]
    Revert(&'static str),
    #[error("finalizer")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Read(_) => "read",
            Error::Write(..) => "write",
            Error::Conflict => "conflict",
            Error::Route(_) => "route",
            Error::Revert(_) => "revert",
            Error::Finalizer(e) => match e.as_ref() {
                F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner.label(),
                _ => "finalizer",
            },
        }
    }

    /// Whether the reconcile only has to run again (not a failure worth a warning).
    pub(super) fn is_conflict(&self) -> bool {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Conflict => true,
            Error::Finalizer(e) => match e.as_ref() {
                F::ApplyFailed(Error::Conflict) | F::CleanupFailed(Error::Conflict) => true,
                // The finalizer patch tests the finalizers it read: a refusal (422, or 409)
                // means the cached Canary was behind (often: a reconcile woken by its
                // target before the cache held the finalizer the previous one added).
                F::AddFinalizer(kube::Error::Api(status))
                | F::RemoveFinalizer(kube::Error::Api(status)) => {
                    matches!(status.code, 409 | 422)
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// An error and all its causes, for logs: "writing Service podinfo: ApiError: ...".
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Some errors (kube's finalizer error) also print their cause themselves.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finalizer_patch_refused_because_the_cache_was_behind_is_a_conflict_not_a_failure() {
        use kube::runtime::finalizer::Error as F;
        let refused = |code| {
            let mut status = kube::core::Status::failure(
                "the server rejected our request due to an error in our request",
                "Invalid",
            );
            status.code = code;
            kube::Error::Api(status.boxed())
        };
        assert!(Error::Finalizer(Box::new(F::AddFinalizer(refused(422)))).is_conflict());
        assert!(Error::Finalizer(Box::new(F::RemoveFinalizer(refused(409)))).is_conflict());
        assert!(!Error::Finalizer(Box::new(F::AddFinalizer(refused(403)))).is_conflict());
        assert!(!Error::Finalizer(Box::new(F::UnnamedObject)).is_conflict());
    }
}
