//! Opening a plugin file, step by step, with one clear error per failure mode, and
//! loading it (open, describe, init).
#![allow(unsafe_code)] // Loading native code is inherently unsafe; every block says why.

use std::path::Path;
use std::sync::Arc;

use abi_stable::library::{LibraryError, lib_header_from_path};
use abi_stable::std_types::RStr;
use kopf_abi::protocol::{InitConfig, PluginDescription};
use kopf_abi::{ABI_REVISION, PluginModuleRef, REVISION_SYMBOL};

use super::{CallerInfo, HostServices, Plugin, PluginError, host};

/// Opens `path`, checks the revision symbol and the abi_stable layout, and returns the
/// root module. The libraries are leaked: plugins are never unloaded.
pub(crate) fn open(path: &Path) -> Result<PluginModuleRef, PluginError> {
    let shown = path.display().to_string();

    // (1) The file must exist.
    if !path.exists() {
        return Err(PluginError::NotFound { path: shown });
    }
    if path.is_dir() {
        return Err(PluginError::NotALibrary {
            path: shown,
            reason: "it is a directory".to_owned(),
        });
    }

    // (2) It must be a loadable shared library.
    // SAFETY: loading a library runs its initialisers. That is the point of a plugin:
    // the user asked us to run this code.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::NotALibrary {
        path: shown.clone(),
        reason: dl_reason(&error_text(&e), path),
    })?;

    // (3) It must export the plain revision static.
    let symbol = format!("{REVISION_SYMBOL}\0");
    // SAFETY: the symbol is declared by the ABI as a `u32` static; we only take its address.
    let revision_ptr: Option<*const u32> = unsafe { lib.get::<*const u32>(symbol.as_bytes()) }
        .ok()
        .map(|sym| *sym);
    let Some(revision_ptr) = revision_ptr.filter(|p| !p.is_null()) else {
        return Err(PluginError::NotAPlugin { path: shown });
    };
    // SAFETY: a non-null address of the exported `u32` static, alive while `lib` is loaded
    // (and `lib` is leaked below, so forever).
    let revision = unsafe { revision_ptr.read_unaligned() };
    // Keep the library mapped for the life of the process.
    std::mem::forget(lib);

    // (4) The revision must match ours.
    if revision != ABI_REVISION {
        return Err(PluginError::RevisionMismatch {
            path: shown,
            found: revision,
            expected: ABI_REVISION,
        });
    }

    // (5) The abi_stable header and layout check, without the per-type module cache.
    let header = lib_header_from_path(path).map_err(|e| library_error(&shown, e))?;
    header
        .init_root_module::<PluginModuleRef>()
        .map_err(|e| library_error(&shown, e))
}

/// An error with its sources: libloading's own text is just "dlopen failed".
fn error_text(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text.strip_prefix("dlopen failed: ")
        .map(str::to_owned)
        .unwrap_or(text)
}

/// Shortens a `dlopen` error: drop the repeated path prefix.
fn dl_reason(text: &str, path: &Path) -> String {
    let p = path.display().to_string();
    let trimmed = text.trim();
    let trimmed = trimmed.strip_prefix(&format!("{p}: ")).unwrap_or(trimmed);
    // dlopen's messages sometimes repeat the path later in the text.
    trimmed.replace(&format!("{p}: "), "").trim().to_owned()
}

/// Maps an abi_stable error to a one-line [`PluginError`], keeping the full text as detail.
fn library_error(path: &str, err: LibraryError) -> PluginError {
    let detail = err.to_string();
    match &err {
        LibraryError::GetSymbolError { .. } => PluginError::NotAPlugin {
            path: path.to_owned(),
        },
        LibraryError::OpenError { err, .. } => PluginError::NotALibrary {
            path: path.to_owned(),
            reason: err.to_string().trim().to_owned(),
        },
        LibraryError::AbiInstability(_)
        | LibraryError::InvalidAbiHeader(_)
        | LibraryError::InvalidCAbi { .. } => PluginError::Layout {
            path: path.to_owned(),
            summary: summarize_abi_dump(&detail),
            detail,
        },
        LibraryError::IncompatibleVersionNumber { .. } | LibraryError::ParseVersionError(_) => {
            PluginError::Layout {
                path: path.to_owned(),
                summary: summarize_abi_dump(&detail),
                detail,
            }
        }
        _ => PluginError::Layout {
            path: path.to_owned(),
            summary: summarize_abi_dump(&detail),
            detail,
        },
    }
}

/// Extracts a one-line summary from abi_stable's multi-hundred-line layout dump.
///
/// The dump ends with blocks like `Error:mismatched type\nExpected:\n    u64\nFound:\n    u32`;
/// we keep the last error name and its expected/found values.
pub(crate) fn summarize_abi_dump(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let Some(err_idx) = lines.iter().rposition(|l| l.starts_with("Error:")) else {
        // No recognisable structure: the last few meaningful lines, joined.
        let tail: Vec<&str> = lines.iter().rev().take(3).rev().copied().collect();
        return squeeze(&tail.join(" / "));
    };
    let mut parts = vec![lines[err_idx].trim_start_matches("Error:").trim().to_owned()];
    let mut i = err_idx + 1;
    while i < lines.len() {
        let line = lines[i];
        if let Some(label) = ["Expected:", "Found:"].into_iter().find(|p| line.starts_with(p)) {
            let inline = line[label.len()..].trim();
            let value = if inline.is_empty() {
                lines.get(i + 1).copied().unwrap_or("").to_owned()
            } else {
                inline.to_owned()
            };
            if inline.is_empty() {
                i += 1;
            }
            parts.push(format!("{label} {}", squeeze(&value)));
        }
        i += 1;
    }
    squeeze(&parts.join(" / "))
}

/// Collapses whitespace and bounds the length of a summary line.
fn squeeze(text: &str) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    const MAX: usize = 300;
    if one.chars().count() > MAX {
        let cut: String = one.chars().take(MAX).collect();
        format!("{cut}...")
    } else {
        one
    }
}

/// Loads one plugin: open, describe, init.
pub(super) fn load(
    index: usize,
    path: &Path,
    services: Arc<dyn HostServices>,
) -> Result<Plugin, PluginError> {
    let module = open(path)?;
    let shown = path.display().to_string();
    let handshake = |step: &'static str, message: String| PluginError::Handshake {
        path: shown.clone(),
        step,
        message,
    };

    let described = (module.describe())()
        .into_result()
        .map_err(|f| handshake("describe", f.to_string()))?;
    let description: PluginDescription = serde_json::from_str(described.as_str()).map_err(|e| {
        handshake(
            "describe",
            format!("the plugin description is not valid JSON: {e}"),
        )
    })?;

    let name = if description.plugin.name.is_empty() {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        description.plugin.name.clone()
    };
    let (context_id, context) = host::register(CallerInfo {
        index,
        path: shown.clone(),
        name,
    });
    *context.services.write() = services;

    let config = InitConfig {
        host_version: env!("CARGO_PKG_VERSION").to_owned(),
        max_log_level: max_log_level(),
        extra: Default::default(),
    };
    let config = serde_json::to_string(&config).map_err(|e| handshake("init", e.to_string()))?;
    (module.init())(host::host_table(context_id), RStr::from_str(&config))
        .into_result()
        .map_err(|f| handshake("init", f.to_string()))?;

    Ok(Plugin {
        index,
        path: path.to_path_buf(),
        module,
        description,
        context,
        context_id,
    })
}

/// The most verbose level the host's subscriber will print, as a [`kopf_abi::LogLevel`] value.
pub(super) fn max_log_level() -> u8 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => kopf_abi::LogLevel::ERROR.0,
        LevelFilter::WARN => kopf_abi::LogLevel::WARN.0,
        LevelFilter::INFO => kopf_abi::LogLevel::INFO.0,
        LevelFilter::DEBUG => kopf_abi::LogLevel::DEBUG.0,
        _ => kopf_abi::LogLevel::TRACE.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_keeps_the_last_error_block() {
        let dump = "\nlots\n  of\n layout\nError:mismatched type\nExpected:\n    u64\nFound:\n    u32\n\n";
        assert_eq!(
            summarize_abi_dump(dump),
            "mismatched type / Expected: u64 / Found: u32"
        );
        let two =
            "Error:first\nExpected:\n a\nFound:\n b\nmore\nError:too many fields\nExpected: 9\nFound: 8\n";
        assert_eq!(
            summarize_abi_dump(two),
            "too many fields / Expected: 9 / Found: 8"
        );
    }

    #[test]
    fn summary_without_structure_is_bounded_and_one_line() {
        let text = format!("a\nb\n{}\n", "x ".repeat(500));
        let s = summarize_abi_dump(&text);
        assert!(!s.contains('\n'));
        assert!(s.len() <= 303);
    }

    #[test]
    fn dlopen_reason_drops_the_repeated_path() {
        let p = Path::new("/tmp/x.so");
        assert_eq!(
            dl_reason("/tmp/x.so: invalid ELF header", p),
            "invalid ELF header"
        );
    }
}
