//! `kopf version`.

/// The text `kopf version` prints.
pub fn version_text() -> String {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    format!(
        "kopf {}\nplugin ABI revision: {}\nplugin protocol: JSON (kopf-abi {})\nbuild: {}-{} ({profile})\n",
        env!("CARGO_PKG_VERSION"),
        kopf_abi::ABI_REVISION,
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
    )
}
