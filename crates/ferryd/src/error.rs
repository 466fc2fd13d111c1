//! ferryd's errors: a core error keeps dockerd's status and message; kernel and store
//! failures are 500s that name what failed.

use ferry_core::CoreError;
use ferry_kernel::KernelError;
use ferry_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Error::Core(c) => c.status(),
            _ => 500,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
