//! Kernel errors name the action and the object ("create bridge fy-1a2b: File exists")
//! and keep the errno, so that create and delete can treat EEXIST and ENODEV as done.

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{action} {object}: {message}")]
    Failed {
        action: &'static str,
        object: String,
        message: String,
        errno: Option<i32>,
    },
    /// A fault injected at a step of an attach (see [`crate::fault`]): never in normal
    /// operation.
    #[error(
        "attach step {step}: fault injected ({}=attach:{step})",
        crate::fault::ENV
    )]
    Injected { step: crate::fault::AttachStep },
}

impl KernelError {
    pub fn netlink(action: &'static str, object: impl Into<String>, e: rtnetlink::Error) -> Self {
        let errno = match &e {
            rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
            _ => None,
        };
        let message = match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            other => other.to_string(),
        };
        KernelError::Failed {
            action,
            object: object.into(),
            message,
            errno,
        }
    }

    pub fn sys(action: &'static str, object: impl Into<String>, e: nix::Error) -> Self {
        KernelError::Failed {
            action,
            object: object.into(),
            message: e.desc().to_string(),
            errno: Some(e as i32),
        }
    }

    pub fn io(action: &'static str, object: impl Into<String>, e: std::io::Error) -> Self {
        KernelError::Failed {
            action,
            object: object.into(),
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }

    pub fn other(
        action: &'static str,
        object: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        KernelError::Failed {
            action,
            object: object.into(),
            message: message.into(),
            errno: None,
        }
    }

    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Failed { errno, .. } => *errno,
            KernelError::Injected { .. } => None,
        }
    }

    /// The object is already gone (for idempotent deletes).
    pub fn is_gone(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::EINVAL) | Some(libc::ESRCH)
        )
    }
}
