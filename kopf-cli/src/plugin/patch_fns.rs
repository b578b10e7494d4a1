//! Handlers' body transformations (Kopf's `patch.fns`), kept by their plugins: applying
//! them to a body and releasing them, through the control method `patch.fns`.

use kopf_abi::protocol::control_methods::PATCH_FNS;
use serde_json::{Value, json};

use super::PluginSet;

impl PluginSet {
    /// `body` after the functions `(plugin, token)`, in order (consecutive functions of
    /// one plugin in one call). An error says which plugin failed and why.
    pub fn apply_patch_fns(&self, fns: &[(usize, u64)], mut body: Value) -> Result<Value, String> {
        for run in fns.chunk_by(|a, b| a.0 == b.0) {
            let index = run[0].0;
            let plugin = self
                .plugins()
                .iter()
                .find(|p| p.index() == index)
                .ok_or_else(|| format!("no plugin {index} for its patch functions"))?;
            let tokens: Vec<u64> = run.iter().map(|f| f.1).collect();
            let payload = json!({"op": "apply", "fns": tokens, "body": body}).to_string();
            let answer = plugin.control(PATCH_FNS, &payload).map_err(|f| {
                format!(
                    "plugin {} could not apply its patch functions: {f}",
                    plugin.name()
                )
            })?;
            let mut answer: Value = serde_json::from_str(&answer)
                .map_err(|e| format!("plugin {} answered patch.fns with bad JSON: {e}", plugin.name()))?;
            body = answer
                .get_mut("body")
                .map(Value::take)
                .ok_or_else(|| format!("plugin {} answered patch.fns without a body", plugin.name()))?;
        }
        Ok(body)
    }

    /// Lets the plugins forget the functions (applied, or given up).
    pub fn release_patch_fns(&self, fns: &[(usize, u64)]) {
        for run in fns.chunk_by(|a, b| a.0 == b.0) {
            let Some(plugin) = self.plugins().iter().find(|p| p.index() == run[0].0) else {
                continue;
            };
            let tokens: Vec<u64> = run.iter().map(|f| f.1).collect();
            let payload = json!({"op": "release", "fns": tokens}).to_string();
            if let Err(failure) = plugin.control(PATCH_FNS, &payload) {
                tracing::debug!(target: "kopf.plugin", "Plugin {} failed to release patch functions: {failure}", plugin.name());
            }
        }
    }
}
