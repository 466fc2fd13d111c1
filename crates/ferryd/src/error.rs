//! ferryd's errors: a core error keeps dockerd's status and message; kernel and store
//! failures are 500s that name what failed.

use ferry_core::CoreError;
use ferry_kernel::KernelError;
use ferry_overlay::ClusterError;
use ferry_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// plughost: a third-party plugin was not found, or failed a call.
    #[error(transparent)]
    Plugin(#[from] crate::plughost::PluginError),
    /// An overlay the cluster holds now, whose local copy this host could not make.
    #[error(
        "overlay {network} is created in the cluster, but not on this host yet: {cause}; \
         once that is fixed, `ferry system reconcile` (or the periodic check) brings it up here"
    )]
    NotHere {
        network: String,
        #[source]
        cause: Box<Error>,
    },
    /// An overlay gone from the cluster whose local copy this host could not remove.
    #[error(
        "overlay {network} is removed from the cluster, but this host's copy is left: {cause}"
    )]
    LeftHere {
        network: String,
        #[source]
        cause: Box<Error>,
    },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Error::Core(c) => c.status(),
            Error::Cluster(c) => match c {
                ClusterError::Duplicate(_) => 409,
                ClusterError::NoSuchNetwork(_) | ClusterError::NoSuchNode(_) => 404,
                ClusterError::Overlap { .. }
                | ClusterError::InUse { .. }
                | ClusterError::ForeignBlock { .. }
                | ClusterError::AddressInUse(_)
                | ClusterError::NoBlock(_)
                | ClusterError::NoSubnet
                | ClusterError::NoVni => 403,
                // etcd cannot be reached or answer: not the client's mistake, and
                // not ferryd's either.
                ClusterError::Store(_) | ClusterError::Contention(_) => 503,
                ClusterError::NodeTaken { .. } | ClusterError::Decode { .. } => 500,
            },
            Error::Plugin(p) => p.status(),
            Error::NotHere { cause, .. } | Error::LeftHere { cause, .. } => cause.status(),
            _ => 500,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
