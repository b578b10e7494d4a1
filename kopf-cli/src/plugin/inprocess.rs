//! In-process plugins: a [`PluginModule`] value linked into the running program (an
//! embedded operator, or tests) instead of a `cdylib` file.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::RStr;
use kopf_abi::protocol::{InitConfig, PluginDescription};
use kopf_abi::{ABI_REVISION, PluginModule};

use super::{
    CallerInfo, HandlerRef, HostServices, NoServices, Plugin, PluginError, PluginSet, host, render_selector,
};

/// The `InitConfig.extra` key telling the SDK it runs in the host's process (the SDK's
/// `kopf::IN_PROCESS_KEY`): it then keeps its hands off the process's `tracing`.
pub const IN_PROCESS_KEY: &str = "in_process";

impl PluginSet {
    /// Builds a set from modules linked into this program, e.g. `kopf::plugin_module()`
    /// of the SDK (all attribute-declared handlers of the program). Each is named `name`
    /// in logs and errors; they are described and initialised like loaded plugins.
    pub fn from_modules(modules: Vec<(String, PluginModule)>) -> Result<Self, PluginError> {
        Self::from_modules_with_services(modules, Arc::new(NoServices))
    }

    /// Like [`PluginSet::from_modules`], with host services available from `init` onwards.
    pub fn from_modules_with_services(
        modules: Vec<(String, PluginModule)>,
        services: Arc<dyn HostServices>,
    ) -> Result<Self, PluginError> {
        let mut set = PluginSet::default();
        let mut seen = HashSet::new();
        for (index, (name, module)) in modules.into_iter().enumerate() {
            let shown = format!("<in-process {name}>");
            let handshake = |step: &'static str, message: String| PluginError::Handshake {
                path: shown.clone(),
                step,
                message,
            };
            if module.abi_revision != ABI_REVISION {
                return Err(PluginError::RevisionMismatch {
                    path: shown,
                    found: module.abi_revision,
                    expected: ABI_REVISION,
                });
            }
            let module = module.leak_into_prefix();
            let described = (module.describe())()
                .into_result()
                .map_err(|f| handshake("describe", f.to_string()))?;
            let description: PluginDescription = serde_json::from_str(described.as_str()).map_err(|e| {
                handshake(
                    "describe",
                    format!("the plugin description is not valid JSON: {e}"),
                )
            })?;
            let (context_id, context) = host::register(CallerInfo {
                index,
                path: shown.clone(),
                name: name.clone(),
            });
            *context.services.write() = services.clone();
            let mut config = InitConfig {
                host_version: env!("CARGO_PKG_VERSION").to_owned(),
                max_log_level: super::loader::max_log_level(),
                extra: Default::default(),
            };
            config
                .extra
                .insert(IN_PROCESS_KEY.to_owned(), serde_json::Value::Bool(true));
            let config = serde_json::to_string(&config).map_err(|e| handshake("init", e.to_string()))?;
            (module.init())(host::host_table(context_id), RStr::from_str(&config))
                .into_result()
                .map_err(|f| handshake("init", f.to_string()))?;
            let plugin = Arc::new(Plugin {
                index,
                path: PathBuf::from(&shown),
                module,
                description,
                context,
                context_id,
            });
            for spec in &plugin.description.handlers {
                let key = (spec.kind, spec.selector.clone(), spec.id.clone());
                if !seen.insert(key) {
                    return Err(PluginError::DuplicateHandler {
                        kind: spec.kind,
                        id: spec.id.clone(),
                        selector: render_selector(spec.selector.as_ref()),
                        first: shown.clone(),
                        second: shown.clone(),
                    });
                }
                set.handlers.push(HandlerRef {
                    plugin: plugin.clone(),
                    spec: Arc::new(spec.clone()),
                });
            }
            set.plugins.push(plugin);
        }
        Ok(set)
    }
}
