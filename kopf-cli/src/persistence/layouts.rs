//! Where a storage of Kopf's kinds reads and writes: annotations, the status field, or
//! both ([`Layout`]); the storages themselves are built from the settings in
//! [`super::storages`].

/// Where a storage reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Annotations are read (first) and written.
    pub annotations: bool,
    /// The status field is read (after the annotations).
    pub status_read: bool,
    /// The status field is written.
    pub status_write: bool,
}

impl Layout {
    /// Kopf's `SmartProgressStorage` (Kopf ≥ 1.44): annotations, the status field read only.
    pub const SMART: Self = Self {
        annotations: true,
        status_read: true,
        status_write: false,
    };
    /// Annotations only.
    pub const ANNOTATIONS: Self = Self {
        annotations: true,
        status_read: false,
        status_write: false,
    };
    /// The status field only.
    pub const STATUS: Self = Self {
        annotations: false,
        status_read: true,
        status_write: true,
    };
    /// Both, annotations read first.
    pub const MULTI: Self = Self {
        annotations: true,
        status_read: true,
        status_write: true,
    };
}
