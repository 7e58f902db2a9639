//! Creating a userfaultfd, and probing what the kernel offers without committing one.

use rustix::io::Errno;

use crate::error::{Attempt, CreateError, CreatePath};
use crate::{sys, Features, Ioctls, Uffd};

/// Which creation paths to try, and in which order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CreateOrder {
    /// `userfaultfd(2)`, then `/dev/userfaultfd` (the default: the syscall needs no device node).
    #[default]
    SyscallFirst,
    /// `/dev/userfaultfd`, then `userfaultfd(2)` (where the device is granted but the sysctl is off).
    DeviceFirst,
    /// Only `userfaultfd(2)`.
    SyscallOnly,
    /// Only `/dev/userfaultfd`.
    DeviceOnly,
}

/// Builds a [`Uffd`]: how to create it, and which features to enable.
///
/// By default faults are handled for user mode only (`UFFD_USER_MODE_ONLY`), which unprivileged
/// users may create; a kernel-mode access to a registered missing page (a `read(2)` into it, say)
/// then fails with EFAULT instead of waiting. `O_CLOEXEC` is always set.
///
/// ```
/// use uffd::{Features, Uffd};
///
/// let uffd = Uffd::builder()
///     .features(Features::EVENT_REMOVE | Features::EVENT_UNMAP)
///     .non_blocking(true)
///     .create()?;
/// assert!(uffd.features().contains(Features::EVENT_REMOVE));
/// # Ok::<(), uffd::CreateError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct UffdBuilder {
    user_mode_only: bool,
    non_blocking: bool,
    features: Features,
    order: CreateOrder,
}

impl Default for UffdBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl UffdBuilder {
    /// User-mode-only faults, blocking reads, no features, syscall first.
    pub fn new() -> Self {
        Self {
            user_mode_only: true,
            non_blocking: false,
            features: Features::empty(),
            order: CreateOrder::SyscallFirst,
        }
    }

    /// Handle faults taken in kernel mode too (needs CAP_SYS_PTRACE,
    /// `vm.unprivileged_userfaultfd=1`, or access to `/dev/userfaultfd`).
    pub fn kernel_faults(mut self, on: bool) -> Self {
        self.user_mode_only = !on;
        self
    }

    /// Open the fd with `O_NONBLOCK`: [`Uffd::read_events`] returns 0 instead of waiting.
    pub fn non_blocking(mut self, on: bool) -> Self {
        self.non_blocking = on;
        self
    }

    /// Features to enable with `UFFDIO_API`. Asking for one the kernel lacks is a
    /// [`CreateError::MissingFeatures`] that names it. `MOVE` needs no asking.
    pub fn features(mut self, features: Features) -> Self {
        self.features = features;
        self
    }

    /// Which creation paths to try, in which order.
    pub fn order(mut self, order: CreateOrder) -> Self {
        self.order = order;
        self
    }

    fn paths(&self) -> Vec<CreatePath> {
        let umo = self.user_mode_only;
        let syscall = CreatePath::Syscall {
            user_mode_only: umo,
        };
        let device = CreatePath::Device {
            user_mode_only: umo,
        };
        match self.order {
            CreateOrder::SyscallFirst => vec![syscall, device],
            CreateOrder::DeviceFirst => vec![device, syscall],
            CreateOrder::SyscallOnly => vec![syscall],
            CreateOrder::DeviceOnly => vec![device],
        }
    }

    /// Opens an fd by the first path that works, without `UFFDIO_API`.
    fn open(&self) -> Result<(std::os::fd::OwnedFd, CreatePath), CreateError> {
        let mut attempts = Vec::new();
        for path in self.paths() {
            match open_path(path, self.non_blocking) {
                Ok(fd) => return Ok((fd, path)),
                Err(errno) => {
                    tracing::debug!(%path, %errno, "userfaultfd creation path failed");
                    attempts.push(Attempt { path, errno });
                }
            }
        }
        Err(CreateError::Unavailable { attempts })
    }

    /// Creates the fd and negotiates the API.
    ///
    /// # Errors
    ///
    /// [`CreateError::Unavailable`] when no path works (each attempt with its errno and fix),
    /// [`CreateError::MissingFeatures`] when the kernel lacks a requested feature,
    /// [`CreateError::NotPermitted`] for `EVENT_FORK` without CAP_SYS_PTRACE.
    pub fn create(&self) -> Result<Uffd, CreateError> {
        let (fd, path) = self.open()?;
        let mut api = sys::uffdio_api {
            api: sys::UFFD_API,
            features: self.features.bits(),
            ioctls: 0,
        };
        match sys::api(&fd, &mut api) {
            Ok(()) => Ok(Uffd::from_parts(
                fd,
                self.features,
                Features::from_bits_retain(api.features),
                path,
            )),
            Err(errno) => Err(self.explain_api_failure(errno)),
        }
    }

    /// Turns a failed `UFFDIO_API` into the error that says why, probing on a throw-away fd.
    fn explain_api_failure(&self, errno: Errno) -> CreateError {
        if errno == Errno::PERM {
            return CreateError::NotPermitted {
                features: self.features & Features::EVENT_FORK,
                errno,
            };
        }
        if errno == Errno::INVAL && !self.features.is_empty() {
            if let Ok(caps) = Capabilities::probe_with(self) {
                let missing = self.features - caps.features;
                if !missing.is_empty() {
                    return CreateError::MissingFeatures {
                        requested: self.features,
                        supported: caps.features,
                        missing,
                    };
                }
            }
        }
        CreateError::Api { errno }
    }
}

fn open_path(path: CreatePath, non_blocking: bool) -> Result<std::os::fd::OwnedFd, Errno> {
    match path {
        CreatePath::Syscall { user_mode_only } => sys::userfaultfd(user_mode_only, non_blocking),
        CreatePath::Device { user_mode_only } => sys::userfaultfd_dev(user_mode_only, non_blocking),
    }
}

/// Tries one creation path on its own, keeping nothing: `Ok` when it yields an fd.
///
/// ```
/// use uffd::CreatePath;
/// let ok = uffd::try_path(CreatePath::Syscall { user_mode_only: true }).is_ok();
/// # let _ = ok;
/// ```
pub fn try_path(path: CreatePath) -> Result<(), Errno> {
    open_path(path, false).map(drop)
}

/// What the kernel offers, read on a throw-away fd (`UFFDIO_API` succeeds once per fd, so probing
/// must not spend the fd that will be used).
///
/// ```
/// let caps = uffd::Capabilities::probe()?;
/// println!("MOVE: {}", caps.supports_move());
/// # Ok::<(), uffd::CreateError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    features: Features,
    ioctls: Ioctls,
    path: CreatePath,
}

impl Capabilities {
    /// Probes with the default builder (user-mode-only, syscall then device).
    ///
    /// # Errors
    ///
    /// As [`UffdBuilder::create`], when no fd can be created or `UFFDIO_API` fails.
    pub fn probe() -> Result<Self, CreateError> {
        Self::probe_with(&UffdBuilder::new())
    }

    /// Probes through the paths of `builder` (its features are ignored).
    ///
    /// # Errors
    ///
    /// As [`UffdBuilder::create`].
    pub fn probe_with(builder: &UffdBuilder) -> Result<Self, CreateError> {
        let (fd, path) = builder.open()?;
        let mut api = sys::uffdio_api {
            api: sys::UFFD_API,
            features: 0,
            ioctls: 0,
        };
        sys::api(&fd, &mut api).map_err(|errno| CreateError::Api { errno })?;
        Ok(Self {
            features: Features::from_bits_retain(api.features),
            ioctls: Ioctls::from_bits_retain(api.ioctls),
            path,
        })
    }

    /// Every feature the kernel supports.
    pub fn features(&self) -> Features {
        self.features
    }

    /// The ioctls available on the fd itself (REGISTER, UNREGISTER, API).
    pub fn ioctls(&self) -> Ioctls {
        self.ioctls
    }

    /// The path that created the probe fd.
    pub fn path(&self) -> CreatePath {
        self.path
    }

    /// Whether `UFFDIO_MOVE` is available: read from `UFFD_FEATURE_MOVE`, never from the kernel
    /// version.
    pub fn supports_move(&self) -> bool {
        self.features.contains(Features::MOVE)
    }

    /// The same capabilities as if the kernel lacked `features`: for exercising the fallback
    /// paths of code that adapts to older kernels, on a new one.
    ///
    /// ```
    /// use uffd::{Capabilities, Features};
    /// let caps = Capabilities::probe()?.without(Features::MOVE);
    /// assert!(!caps.supports_move());
    /// # Ok::<(), uffd::CreateError>(())
    /// ```
    #[must_use]
    pub fn without(mut self, features: Features) -> Self {
        self.features -= features;
        self
    }
}
