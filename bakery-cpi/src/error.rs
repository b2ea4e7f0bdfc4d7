//! The one error type of the CPI and its one mapping onto the error types a BOSH director knows.

use crate::backend::BackendError;
use crate::config::ConfigError;

/// Everything a CPI call can fail with.
///
/// [`CpiError::bosh_type`] and [`CpiError::ok_to_retry`] are the only place these are mapped
/// onto the `error.type` / `error.ok_to_retry` of the RPC response.
#[derive(Debug, thiserror::Error)]
pub enum CpiError {
    /// The command line is not `bakery-cpi [--config <path>]`.
    #[error("invalid command line: {0}")]
    Usage(String),
    /// Stdin could not be read.
    #[error("cannot read the request from stdin: {0}")]
    ReadRequest(#[source] std::io::Error),
    /// The request is larger than the CPI accepts.
    #[error("request is larger than {limit} bytes")]
    RequestTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request is empty.
    #[error("request is empty: expected one json object on stdin")]
    EmptyRequest,
    /// The request is not JSON.
    #[error("request is not valid json: {0}")]
    InvalidJson(String),
    /// The request is JSON but not of the request shape.
    #[error("request is not a cpi request: {0}")]
    MalformedRequest(String),
    /// An argument is missing or of the wrong type.
    #[error("invalid call of {method}: argument {index} ({name}) {reason}")]
    InvalidArgument {
        /// The method called.
        method: String,
        /// The argument's position (0-based).
        index: usize,
        /// The argument's name in the BOSH docs.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The method is not known to this CPI.
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    /// The method is known but bakery cannot do it.
    #[error("{method} is not implemented by the bakery cpi: {reason}")]
    NotImplemented {
        /// The method called.
        method: String,
        /// Why bakery does not offer it.
        reason: &'static str,
    },
    /// The request asks for something bakery can never do (e.g. shrink a disk).
    #[error("{0}")]
    NotSupported(String),
    /// The configuration (file plus context) is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The VM (Pi) is not known or not baked.
    #[error("vm {vm_cid} not found: {reason}")]
    VmNotFound {
        /// The VM cid (Pi serial).
        vm_cid: String,
        /// What was found instead.
        reason: String,
    },
    /// The disk is not known.
    #[error("disk {disk_cid} not found")]
    DiskNotFound {
        /// The disk cid.
        disk_cid: String,
    },
    /// The disk is not attached to the VM it should be detached from.
    #[error("disk {disk_cid} is not attached to vm {vm_cid}")]
    DiskNotAttached {
        /// The VM cid.
        vm_cid: String,
        /// The disk cid.
        disk_cid: String,
    },
    /// Bakery has no space for a disk.
    #[error("no space for a disk of {size_mib} MiB: {message}")]
    NoDiskSpace {
        /// The requested size.
        size_mib: i64,
        /// The server's message.
        message: String,
    },
    /// create_vm failed; everything it did has been undone (or the message says what was not).
    #[error("creating a vm from stemcell {stemcell_cid} failed: {reason}")]
    VmCreationFailed {
        /// The stemcell (bakeform) asked for.
        stemcell_cid: String,
        /// What failed, and what of the undo failed.
        reason: String,
        /// True when retrying unchanged may work (no Pi was free).
        ok_to_retry: bool,
    },
    /// A call to bakery failed.
    #[error("{action}: {source}")]
    Bakery {
        /// What the CPI was doing, naming its inputs.
        action: String,
        /// The failure.
        #[source]
        source: BackendError,
    },
    /// Anything else that went wrong in the cloud.
    #[error("{0}")]
    Cloud(String),
}

impl CpiError {
    /// The BOSH error type of this error (`error.type` of the response).
    pub fn bosh_type(&self) -> &'static str {
        match self {
            CpiError::Usage(_)
            | CpiError::ReadRequest(_)
            | CpiError::RequestTooLarge { .. }
            | CpiError::EmptyRequest
            | CpiError::InvalidJson(_)
            | CpiError::MalformedRequest(_)
            | CpiError::Config(_) => "Bosh::Clouds::CpiError",
            CpiError::InvalidArgument { .. } => "InvalidCall",
            CpiError::UnknownMethod(_) | CpiError::NotImplemented { .. } => {
                "Bosh::Clouds::NotImplemented"
            }
            CpiError::NotSupported(_) => "Bosh::Clouds::NotSupported",
            CpiError::VmNotFound { .. } => "Bosh::Clouds::VMNotFound",
            CpiError::DiskNotFound { .. } => "Bosh::Clouds::DiskNotFound",
            CpiError::DiskNotAttached { .. } => "Bosh::Clouds::DiskNotAttached",
            CpiError::NoDiskSpace { .. } => "Bosh::Clouds::NoDiskSpace",
            CpiError::VmCreationFailed { .. } => "Bosh::Clouds::VMCreationFailed",
            CpiError::Bakery { .. } | CpiError::Cloud(_) => "Bosh::Clouds::CloudError",
        }
    }

    /// Whether the director may retry the call unchanged (`error.ok_to_retry`).
    pub fn ok_to_retry(&self) -> bool {
        match self {
            CpiError::VmCreationFailed { ok_to_retry, .. } => *ok_to_retry,
            CpiError::Bakery { source, .. } => source.is_unreachable(),
            _ => false,
        }
    }

    /// Wrap a bakery failure with what the CPI was doing.
    pub fn bakery(action: impl Into<String>, source: BackendError) -> CpiError {
        CpiError::Bakery {
            action: action.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_the_ones_the_director_knows() {
        assert_eq!(CpiError::EmptyRequest.bosh_type(), "Bosh::Clouds::CpiError");
        assert_eq!(
            CpiError::UnknownMethod("x".into()).bosh_type(),
            "Bosh::Clouds::NotImplemented"
        );
        let failed = CpiError::VmCreationFailed {
            stemcell_cid: "s-1".into(),
            reason: "no pi".into(),
            ok_to_retry: true,
        };
        assert_eq!(failed.bosh_type(), "Bosh::Clouds::VMCreationFailed");
        assert!(failed.ok_to_retry());
        let invalid = CpiError::InvalidArgument {
            method: "has_vm".into(),
            index: 0,
            name: "vm_cid",
            reason: "must be a string".into(),
        };
        assert_eq!(invalid.bosh_type(), "InvalidCall");
        assert!(!invalid.ok_to_retry());
        assert_eq!(
            invalid.to_string(),
            "invalid call of has_vm: argument 0 (vm_cid) must be a string"
        );
    }
}
