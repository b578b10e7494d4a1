//! Kopf's `06-peering` example in Rust: run several operators with different priorities
//! (or several replicas with `--lease`); only one of them handles the objects.
//!
//! Each creation is recorded as a side effect: a line `NAMESPACE/NAME IDENTITY` appended
//! to the file named by `KOPF_EXAMPLE_SIDE_EFFECTS` (when set), where `IDENTITY` is
//! `POD_ID` (or `-`). Counting the lines per object shows that no object is handled twice
//! across a hand-over.

use std::io::Write as _;

use serde_json::{Value, json};

/// The environment variable naming the side-effects file.
pub const SIDE_EFFECTS_ENV: &str = "KOPF_EXAMPLE_SIDE_EFFECTS";

/// Records the creation and returns a message into `status.create_fn`.
#[kopf::on::create("kopfexamples")]
pub fn create_fn(ctx: &kopf::Context) -> Result<Value, kopf::Error> {
    let object = format!("{}/{}", ctx.namespace().unwrap_or("-"), ctx.name().unwrap_or("-"));
    let identity = std::env::var("POD_ID").unwrap_or_else(|_| "-".into());
    tracing::info!("Handling {object} as {identity}");
    if let Ok(path) = std::env::var(SIDE_EFFECTS_ENV) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| kopf::Error::temporary(format!("cannot open {path}: {e}"), 1.0))?;
        // One write per line: handlers of several objects append at once, and `writeln!`
        // would write the pieces of a line separately, interleaving them.
        file.write_all(format!("{object} {identity}\n").as_bytes())
            .map_err(|e| kopf::Error::temporary(format!("cannot write {path}: {e}"), 1.0))?;
    }
    Ok(json!({"message": format!("handled by {identity}")}))
}
