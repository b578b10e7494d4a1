//! Kopf's storage classes besides the default annotations, chosen by settings
//! (`settings.persistence.progress_storage` / `diffbase_storage`), so that an operator
//! that used them migrates without re-running handlers:
//!
//! | setting | Kopf's class | reads | writes |
//! |---|---|---|---|
//! | progress `"smart"` (default) | `SmartProgressStorage` | annotations, then the status field | annotations |
//! | progress `"annotations"` | `AnnotationsProgressStorage` | annotations | annotations |
//! | progress `"status"` | `StatusProgressStorage` | the status field | the status field |
//! | progress `"multi"` | `MultiProgressStorage([Annotations…, Status…])` (Kopf ≤ 1.43's smart) | annotations, then the status field | both |
//! | diff-base `"annotations"` (default) | `AnnotationsDiffBaseStorage` | the annotation | the annotation |
//! | diff-base `"status"` | `StatusDiffBaseStorage` | the status field | the status field |
//! | diff-base `"multi"` | `MultiDiffBaseStorage([Annotations…, Status…])` | the annotation, then the status field | both |
//!
//! The annotations' prefix and keys are `persistence.prefix`, `diffbase_key` and `v1`; the
//! status fields are `persistence.progress_field` (Kopf's `status.kopf.progress`) and
//! `diffbase_field` (`status.kopf.last-handled-configuration`). Custom storage classes
//! (Python code) have no equivalent.

use super::diffbase::{DiffBaseError, DiffBaseStorage};
pub use super::layouts::Layout;
use super::progress::ProgressError;
use super::progress_storage::ProgressStorage;
use crate::settings::PersistenceSettings;
use crate::structs::dicts::{self, FieldPath};

/// Errors of the storage settings.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An unknown storage name.
    #[error("settings.persistence.{setting} = {value:?} is not one of {known}")]
    Unknown {
        /// The setting.
        setting: &'static str,
        /// Its value.
        value: String,
        /// The accepted values.
        known: &'static str,
    },
    /// A status storage without a field.
    #[error("settings.persistence.{0} must name a field (such as status.kopf.progress)")]
    EmptyField(&'static str),
    /// The progress storage cannot be built.
    #[error(transparent)]
    Progress(#[from] ProgressError),
    /// The diff-base storage cannot be built.
    #[error(transparent)]
    DiffBase(#[from] DiffBaseError),
}

fn layout(setting: &'static str, value: &str, smart: bool) -> Result<Layout, StorageError> {
    match value {
        "smart" if smart => Ok(Layout::SMART),
        "annotations" => Ok(Layout::ANNOTATIONS),
        "status" => Ok(Layout::STATUS),
        "multi" => Ok(Layout::MULTI),
        _ => Err(StorageError::Unknown {
            setting,
            value: value.to_owned(),
            known: if smart {
                "smart, annotations, status, multi"
            } else {
                "annotations, status, multi"
            },
        }),
    }
}

fn field(setting: &'static str, value: &str) -> Result<FieldPath, StorageError> {
    let path = dicts::parse_field(value);
    if path.iter().any(String::is_empty) {
        return Err(StorageError::EmptyField(setting));
    }
    Ok(path)
}

/// The progress storage the settings ask for.
pub fn progress_storage(settings: &PersistenceSettings) -> Result<ProgressStorage, StorageError> {
    let layout = layout("progress_storage", &settings.progress_storage, true)?;
    let field = field("progress_field", &settings.progress_field)?;
    Ok(ProgressStorage::new(&settings.prefix, settings.v1)?.with_layout(layout, field))
}

/// The diff-base storage the settings ask for.
pub fn diffbase_storage(settings: &PersistenceSettings) -> Result<DiffBaseStorage, StorageError> {
    let layout = layout("diffbase_storage", &settings.diffbase_storage, false)?;
    let field = field("diffbase_field", &settings.diffbase_field)?;
    let storage = DiffBaseStorage::new(&settings.prefix, &settings.diffbase_key, settings.v1, Vec::new())?;
    Ok(storage.with_layout(layout, field))
}

impl ProgressStorage {
    /// Where records are read and written, and the status field.
    pub fn with_layout(mut self, layout: Layout, status_field: FieldPath) -> Self {
        self.layout = layout;
        self.status_field = status_field;
        self
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::persistence::diffbase::{fetch_status_diffbase, store_status_diffbase};
    use crate::structs::patches::Patch;

    fn settings(progress: &str, diffbase: &str) -> PersistenceSettings {
        PersistenceSettings {
            progress_storage: progress.into(),
            diffbase_storage: diffbase.into(),
            ..PersistenceSettings::default()
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(progress_storage(&settings("smart", "annotations")).is_ok());
        for name in ["annotations", "status", "multi"] {
            assert!(progress_storage(&settings(name, name)).is_ok(), "{name}");
            assert!(diffbase_storage(&settings(name, name)).is_ok(), "{name}");
        }
        let error = diffbase_storage(&settings("smart", "smart")).unwrap_err();
        assert!(error.to_string().contains("diffbase_storage"), "{error}");
        let error = progress_storage(&settings("Status", "status")).unwrap_err();
        assert!(error.to_string().contains("\"Status\""), "{error}");
        let empty = PersistenceSettings {
            progress_field: "status..x".into(),
            ..PersistenceSettings::default()
        };
        assert!(matches!(
            progress_storage(&empty),
            Err(StorageError::EmptyField(_))
        ));
    }

    #[test]
    fn progress_layouts_read_and_write_where_kopf_does() {
        use crate::persistence::{progress::HandlerState, times::Timestamp};
        let state = HandlerState::from_scratch(Timestamp::now(), Some("create"));
        let body = json!({"metadata": {"name": "n", "annotations": {"kopf.zalando.org/h": "{\"retries\":1}"}},
                          "status": {"kopf": {"progress": {"h": {"retries": 2}}}}});
        let stored = |name: &str| {
            let storage = progress_storage(&settings(name, "annotations")).unwrap();
            let mut patch = Patch::new();
            storage.store("h", &state, &body, &mut patch);
            let mut after = json!({});
            patch.apply_to(&mut after).unwrap();
            let fetched = storage.fetch("h", &body).unwrap().map(|r| r["retries"].clone());
            (
                after
                    .pointer("/metadata/annotations/kopf.zalando.org~1h")
                    .is_some(),
                after.pointer("/status/kopf/progress/h/purpose").cloned(),
                fetched,
            )
        };
        assert_eq!(stored("smart"), (true, None, Some(json!(1))));
        assert_eq!(stored("annotations"), (true, None, Some(json!(1))));
        assert_eq!(stored("status"), (false, Some(json!("create")), Some(json!(2))));
        assert_eq!(stored("multi"), (true, Some(json!("create")), Some(json!(1))));
        // Only the annotations' layouts ignore the status field when reading.
        let status_only = json!({"status": {"kopf": {"progress": {"h": {"retries": 2}}}}});
        let annotations = progress_storage(&settings("annotations", "annotations")).unwrap();
        assert_eq!(annotations.fetch("h", &status_only).unwrap(), None);
    }

    #[test]
    fn multi_diffbases_write_both_and_read_annotations_first() {
        let storage = diffbase_storage(&settings("smart", "multi")).unwrap();
        let mut patch = Patch::new();
        let mut body = json!({"metadata": {"name": "n"}, "spec": {"a": 1}});
        storage.store(&body, &mut patch, &json!({"spec": {"a": 1}}));
        patch.apply_to(&mut body).unwrap();
        assert_eq!(
            body.pointer("/status/kopf/last-handled-configuration"),
            Some(&json!(r#"{"spec":{"a":1}}"#))
        );
        assert_eq!(
            body.pointer("/metadata/annotations/kopf.zalando.org~1last-handled-configuration"),
            Some(&json!("{\"spec\":{\"a\":1}}\n"))
        );
        body["status"]["kopf"]["last-handled-configuration"] = json!(r#"{"spec":{"a":2}}"#);
        assert_eq!(storage.fetch(&body).unwrap(), Some(json!({"spec": {"a": 1}})));
        let status = diffbase_storage(&settings("smart", "status")).unwrap();
        assert_eq!(status.fetch(&body).unwrap(), Some(json!({"spec": {"a": 2}})));
    }

    #[test]
    fn status_diffbases_are_json_texts_as_in_kopf() {
        let field = dicts::parse_field("status.kopf.last-handled-configuration");
        let mut patch = Patch::new();
        store_status_diffbase(&mut patch, &field, &json!({"spec": {"field": "é"}}));
        let mut body = json!({"metadata": {"name": "n"}});
        patch.apply_to(&mut body).unwrap();
        assert_eq!(
            body.pointer("/status/kopf/last-handled-configuration"),
            Some(&json!(r#"{"spec":{"field":"\u00e9"}}"#))
        );
        assert_eq!(
            fetch_status_diffbase(&body, &field).unwrap(),
            Some(json!({"spec": {"field": "é"}}))
        );
        assert_eq!(fetch_status_diffbase(&json!({}), &field).unwrap(), None);
        let broken = json!({"status": {"kopf": {"last-handled-configuration": "{"}}});
        assert!(fetch_status_diffbase(&broken, &field).is_err());
    }
}
