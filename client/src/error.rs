//! The one error type of the client, keeping the gRPC code so callers can branch on it
//! and the message so a user can act on it.

use std::{error::Error as _, time::Duration};

use tonic::{Code, Status};

/// Why a call failed. A miss or an unmet condition is *not* an error; those are answers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be understood, so no call was attempted.
    #[error("invalid address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The node refused the request as given (INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
    /// FAILED_PRECONDITION); retrying the same request will not help.
    #[error("{}: {message}", code_name(*code))]
    Rejected {
        /// The gRPC code the node answered with.
        code: Code,
        /// The node's explanation, naming the limit or field.
        message: String,
    },
    /// The node could not be reached or said it cannot serve now; worth retrying later.
    /// Already retried by the client before it surfaces.
    #[error("UNAVAILABLE: {message}")]
    Unavailable {
        /// What went wrong, including the transport's cause when there is one.
        message: String,
    },
    /// No answer within the per-call deadline. The request may or may not have been
    /// applied, so it is not retried.
    #[error("DEADLINE_EXCEEDED: no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// Any other gRPC failure (INTERNAL, UNIMPLEMENTED, …): a bug or a version skew
    /// rather than something the caller did.
    #[error("{}: {message}", code_name(*code))]
    Failed {
        /// The gRPC code.
        code: Code,
        /// The message that came with it.
        message: String,
    },
    /// A TLS or token setting could not be used (a file missing or malformed, a
    /// certificate and key that do not match); the message names the file.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The node answered with something that breaks the protocol (for example fewer
    /// replies than keys), which points at a bug on one side.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

impl Error {
    /// The gRPC code behind the error, for callers that branch on codes; `None` when no
    /// call reached the wire or the reply itself was malformed.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Rejected { code, .. } | Error::Failed { code, .. } => Some(*code),
            Error::Unavailable { .. } => Some(Code::Unavailable),
            Error::Timeout(_) => Some(Code::DeadlineExceeded),
            Error::InvalidAddress { .. } | Error::Credentials(_) | Error::Protocol(_) => None,
        }
    }

    /// Whether a retry with the same request can succeed: only UNAVAILABLE, because the
    /// request never reached a node that could apply it.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// Classifies a status; `deadline` is the one this client applied, used when the
    /// status says the client-side timeout fired. Public for callers of the raw stubs
    /// ([`Client::raw`](crate::Client::raw)), so their failures read like the client's.
    pub fn from_status(status: Status, deadline: Duration) -> Error {
        let message = with_causes(&status);
        match status.code() {
            Code::InvalidArgument | Code::ResourceExhausted | Code::FailedPrecondition => {
                Error::Rejected {
                    code: status.code(),
                    message,
                }
            }
            Code::Unavailable => Error::Unavailable { message },
            Code::DeadlineExceeded => Error::Timeout(deadline),
            // tonic reports its own request timeout as CANCELLED with the cause attached.
            Code::Cancelled if timed_out(&status) => Error::Timeout(deadline),
            code => Error::Failed { code, message },
        }
    }
}

/// The status message followed by its distinct causes, because tonic's transport
/// messages alone ("tcp connect error") hide the useful part ("Connection refused").
fn with_causes(status: &Status) -> String {
    let mut message = status.message().to_owned();
    let mut source = status.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    message
}

/// Whether a call ended at its deadline: DEADLINE_EXCEEDED from the server, or tonic's
/// own request timeout, which it reports as CANCELLED ("Timeout expired") with the
/// cause attached — a code that otherwise means the caller gave up, so code that
/// retries or fails over on a timeout must ask this rather than match the code.
pub fn timed_out(status: &Status) -> bool {
    status.code() == Code::DeadlineExceeded
        || status.code() == Code::Cancelled && caused_by::<tonic::TimeoutExpired>(status)
}

fn caused_by<E: std::error::Error + 'static>(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(cause) = source {
        if cause.is::<E>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The canonical upper-case name of a gRPC code (`INVALID_ARGUMENT`), which is what
/// users search for and what other gRPC tools print; tonic's `Display` is prose.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(2);

    #[test]
    fn rejection_keeps_code_and_message() {
        let status = Status::invalid_argument("key is 300 bytes; the limit is 250");
        let err = Error::from_status(status, DEADLINE);
        assert_eq!(err.code(), Some(Code::InvalidArgument));
        assert_eq!(
            err.to_string(),
            "INVALID_ARGUMENT: key is 300 bytes; the limit is 250"
        );
    }

    #[test]
    fn only_unavailable_is_retryable() {
        let unavailable = Error::from_status(Status::unavailable("draining"), DEADLINE);
        assert!(unavailable.is_retryable());
        for status in [
            Status::deadline_exceeded("slow"),
            Status::failed_precondition("not a number"),
            Status::internal("bug"),
        ] {
            assert!(!Error::from_status(status, DEADLINE).is_retryable());
        }
    }

    #[test]
    fn server_deadline_becomes_timeout_with_our_deadline() {
        let err = Error::from_status(Status::deadline_exceeded("late"), DEADLINE);
        assert!(matches!(err, Error::Timeout(d) if d == DEADLINE));
        assert_eq!(err.to_string(), "DEADLINE_EXCEEDED: no answer within 2s");
    }

    #[test]
    fn plain_cancel_is_not_a_timeout() {
        let err = Error::from_status(Status::cancelled("client went away"), DEADLINE);
        assert_eq!(err.code(), Some(Code::Cancelled));
    }
}
