//! A test kit for operators' own test suites: run a plugin with the real `kopf` binary
//! against the emulator (or any cluster), wait for what it does, stop it cleanly.
//!
//! Python Kopf's `KopfRunner`, for plugins:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use kopf_testing::runner::{KopfRunner, build_cdylib, eventually};
//!
//! let plugin = build_cdylib(env!("CARGO_MANIFEST_DIR"), env!("CARGO_PKG_NAME"))?;
//! let mut runner = KopfRunner::builder(plugin)
//!     .apply_yaml(std::fs::read_to_string("deploy/crd.yaml")?)
//!     .start()
//!     .await?;
//! runner.wait_for_line("The operator is ready", Duration::from_secs(30)).await?;
//! let emu = runner.emulator().expect("started on the emulator");
//! emu.apply_yaml(&std::fs::read_to_string("deploy/obj.yaml")?).await?;
//! let status = eventually(Duration::from_secs(30), "status.create_fn", || {
//!     emu.get_object("kopf.dev/v1", "kopfexamples", Some("default"), "kopf-example-1")
//!         .and_then(|o| o.pointer("/status/create_fn").cloned())
//! })
//! .await?;
//! let stopped = runner.stop(Duration::from_secs(10)).await?;
//! assert!(stopped.status.success(), "{}", stopped.log());
//! # Ok(()) }
//! ```
//!
//! The `kopf` binary is `$KOPF_BIN` if set, else `kopf` on `PATH` (`cargo install kopf-cli`),
//! or the one given to [`KopfRunnerBuilder::kopf_bin`].

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Emulator, EmulatorError, EmulatorHandle};

/// How often the wait helpers re-check their condition.
const POLL: Duration = Duration::from_millis(20);

/// The variable naming the `kopf` binary for [`KopfRunner`] (else `kopf` on `PATH`).
pub const KOPF_BIN: &str = "KOPF_BIN";

/// Failures of the test kit.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A condition did not hold before its deadline.
    #[error("timed out after {timeout:?} waiting for {what}{}", log_suffix(.log))]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline.
        timeout: Duration,
        /// The operator's log so far, if a process was involved.
        log: String,
    },
    /// The process exited while something was still awaited.
    #[error("the process exited ({status}) while waiting for {what}{}", log_suffix(.log))]
    Exited {
        /// What was awaited.
        what: String,
        /// How it exited.
        status: ExitStatus,
        /// Its log.
        log: String,
    },
    /// The `kopf` binary was not found.
    #[error("the kopf binary was not found: set {KOPF_BIN} or put `kopf` on PATH (cargo install kopf-cli)")]
    KopfNotFound,
    /// The plugin library does not exist.
    #[error("the plugin {0} does not exist: build the crate first (cargo build)")]
    PluginNotFound(PathBuf),
    /// A process could not be started or signalled.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runner was configured in a way it cannot honour.
    #[error("{0}")]
    Usage(&'static str),
    /// The emulator failed.
    #[error(transparent)]
    Emulator(#[from] EmulatorError),
}

fn log_suffix(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; log so far:\n{log}")
    }
}

/// A deadline for the wait helpers: the timeout error once it has passed.
struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    fn new(timeout: Duration) -> Self {
        Self {
            at: Instant::now() + timeout,
            timeout,
        }
    }

    fn check(&self, what: &str) -> Result<(), RunnerError> {
        if Instant::now() < self.at {
            return Ok(());
        }
        Err(RunnerError::Timeout {
            what: what.to_owned(),
            timeout: self.timeout,
            log: String::new(),
        })
    }
}

/// Polls `condition` until it returns `Some` or `timeout` passes (async: the emulator and
/// the test's other tasks keep running meanwhile).
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> Option<T>,
) -> Result<T, RunnerError> {
    let deadline = Deadline::new(timeout);
    loop {
        if let Some(v) = condition() {
            return Ok(v);
        }
        deadline.check(what)?;
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for synchronous tests: blocks the calling thread between checks.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> Option<T>,
) -> Result<T, RunnerError> {
    let deadline = Deadline::new(timeout);
    loop {
        if let Some(v) = condition() {
            return Ok(v);
        }
        deadline.check(what)?;
        std::thread::sleep(POLL);
    }
}

/// The shared library cargo built for the package under test, next to the running test
/// binary: `target/<profile>/lib<name>.so` with `-` in `crate_name` read as `_`. Pass
/// `env!("CARGO_PKG_NAME")` from an integration test (its own `CARGO_CRATE_NAME` is the
/// test's), or the `[lib] name` if the package sets one. `cargo test` does not build a
/// `cdylib`-only library for the integration tests: [`build_cdylib`] does.
pub fn cdylib_path(crate_name: &str) -> Result<PathBuf, RunnerError> {
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    // target/<profile>/deps/<test>-<hash> -> target/<profile>
    let exe = std::env::current_exe().map_err(|source| RunnerError::Spawn {
        program: "the test binary".into(),
        source,
    })?;
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(&file))
        .unwrap_or_else(|| PathBuf::from(&file));
    if path.exists() {
        Ok(path)
    } else {
        Err(RunnerError::PluginNotFound(path))
    }
}

/// Builds the plugin of the package under test (`cargo build --lib`, with the running
/// test's profile and target directory) and returns its path: call it from an integration
/// test as `build_cdylib(env!("CARGO_MANIFEST_DIR"), env!("CARGO_PKG_NAME"))`.
pub fn build_cdylib(manifest_dir: &str, package: &str) -> Result<PathBuf, RunnerError> {
    let exe = std::env::current_exe().map_err(|source| RunnerError::Spawn {
        program: "the test binary".into(),
        source,
    })?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe.parent().and_then(Path::parent);
    let target = profile_dir.and_then(Path::parent);
    let (Some(profile_dir), Some(target)) = (profile_dir, target) else {
        return Err(RunnerError::Usage(
            "the test binary is not in a cargo target directory",
        ));
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--lib", "--manifest-path"])
        .arg(Path::new(manifest_dir).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        // The test's own package variables would make some build scripts rerun.
        .env_remove("CARGO_MANIFEST_DIR");
    match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().map_err(|source| RunnerError::Spawn {
        program: "cargo build --lib".into(),
        source,
    })?;
    if !status.success() {
        return Err(RunnerError::Spawn {
            program: "cargo build --lib".into(),
            source: std::io::Error::other(format!("exited with {status}")),
        });
    }
    cdylib_path(package)
}

/// The `kopf` binary: `$KOPF_BIN`, else `kopf` found on `PATH`.
pub fn kopf_bin() -> Result<PathBuf, RunnerError> {
    if let Some(bin) = std::env::var_os(KOPF_BIN).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let name = format!("kopf{}", std::env::consts::EXE_SUFFIX);
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(&name))
        .find(|p| p.is_file())
        .ok_or(RunnerError::KopfNotFound)
}

/// A running child process (usually `kopf`) whose stderr is collected line by line;
/// killed on drop if still running.
#[derive(Debug)]
pub struct KopfProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Reads stderr until EOF: after an exit, the last lines are in once it is done.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl KopfProcess {
    /// Starts `program ARGS...` with extra environment variables (and without `RUST_LOG`,
    /// so that the test's own logging settings do not leak into it).
    pub fn spawn_program<I, S, E, K, V>(
        program: impl AsRef<OsStr>,
        args: I,
        envs: E,
    ) -> Result<Self, RunnerError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let spawn_error = |source| RunnerError::Spawn {
            program: program.to_string_lossy().into_owned(),
            source,
        };
        let mut child = Command::new(program)
            .args(args)
            .envs(envs)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = child.stderr.take().map(|stderr| {
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            })
        });
        Ok(Self { child, lines, reader })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// All stderr lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn find_line(&mut self, needle: &str) -> Option<Result<String, ExitStatus>> {
        if let Some(line) = self.lines().into_iter().find(|l| l.contains(needle)) {
            return Some(Ok(line));
        }
        let status = self.try_wait()?;
        // Exited: report it once the last lines are read (they may hold the needle).
        let read = self.reader.as_ref().is_none_or(|r| r.is_finished());
        read.then_some(Err(status))
    }

    fn line_error(
        &self,
        needle: &str,
        found: Result<Result<String, ExitStatus>, RunnerError>,
    ) -> Result<String, RunnerError> {
        let what = format!("a log line containing {needle:?}");
        match found {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(status)) => Err(RunnerError::Exited {
                what,
                status,
                log: self.lines().join("\n"),
            }),
            Err(RunnerError::Timeout { timeout, .. }) => Err(RunnerError::Timeout {
                what,
                timeout,
                log: self.lines().join("\n"),
            }),
            Err(e) => Err(e),
        }
    }

    /// Waits (blocking) until a stderr line contains `needle`; fails with the log so far
    /// if the deadline passes or the process exits first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, RunnerError> {
        let found = wait_until(timeout, needle, || self.find_line(needle));
        self.line_error(needle, found)
    }

    /// [`KopfProcess::wait_for_line`] without blocking the async runtime.
    pub async fn wait_for_line_async(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, RunnerError> {
        let found = eventually(timeout, needle, || self.find_line(needle)).await;
        self.line_error(needle, found)
    }

    /// Sends a signal (e.g. `TERM`, `INT`) with the system's `kill`.
    pub fn signal(&self, name: &str) -> Result<(), RunnerError> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .map_err(|source| RunnerError::Spawn {
                program: "kill".into(),
                source,
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(RunnerError::Spawn {
                program: format!("kill -{name} {}", self.child.id()),
                source: std::io::Error::other(format!("exited with {status}")),
            })
        }
    }

    fn exit_error(&mut self, waited: Result<ExitStatus, RunnerError>) -> Result<ExitStatus, RunnerError> {
        match waited {
            Ok(status) => Ok(status),
            Err(RunnerError::Timeout { what, timeout, .. }) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(RunnerError::Timeout {
                    what,
                    timeout,
                    log: self.lines().join("\n"),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Waits (blocking) for the process to exit, up to `timeout` (then kills it and fails).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, RunnerError> {
        let waited = wait_until(timeout, "the process to exit", || self.try_wait());
        self.exit_error(waited)
    }

    /// [`KopfProcess::wait_exit`] without blocking the async runtime.
    pub async fn wait_exit_async(&mut self, timeout: Duration) -> Result<ExitStatus, RunnerError> {
        let waited = eventually(timeout, "the process to exit", || self.try_wait()).await;
        self.exit_error(waited)
    }
}

impl Drop for KopfProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Configures a [`KopfRunner`]: `KopfRunner::builder(plugin)`.
#[derive(Debug)]
#[must_use]
pub struct KopfRunnerBuilder {
    plugins: Vec<PathBuf>,
    kopf_bin: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
    yaml: Vec<String>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

impl KopfRunnerBuilder {
    /// Another plugin to load in the same operator.
    pub fn plugin(mut self, plugin: impl Into<PathBuf>) -> Self {
        self.plugins.push(plugin.into());
        self
    }

    /// The `kopf` binary to run (default: [`kopf_bin`]).
    pub fn kopf_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.kopf_bin = Some(path.into());
        self
    }

    /// Runs against the cluster of this kubeconfig instead of starting the emulator.
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// YAML (CRDs, objects) applied to the emulator before the operator starts.
    /// Only with the emulator: apply to a real cluster with your own tools.
    pub fn apply_yaml(mut self, yaml: impl Into<String>) -> Self {
        self.yaml.push(yaml.into());
        self
    }

    /// Arguments of `kopf run` before the plugins, replacing the default
    /// `-A --standalone --verbose`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// An environment variable of the operator process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Starts the emulator (unless a kubeconfig was given), applies the YAML, and starts
    /// `kopf run ARGS... PLUGINS...`. It does not wait for the operator to be ready: use
    /// [`KopfRunner::wait_for_line`] (`"The operator is ready"`).
    pub async fn start(self) -> Result<KopfRunner, RunnerError> {
        if self.kubeconfig.is_some() && !self.yaml.is_empty() {
            return Err(RunnerError::Usage(
                "apply_yaml applies to the emulator only: with a kubeconfig, apply with your own tools",
            ));
        }
        for plugin in &self.plugins {
            if !plugin.exists() {
                return Err(RunnerError::PluginNotFound(plugin.clone()));
            }
        }
        let kopf = match self.kopf_bin {
            Some(bin) => bin,
            None => kopf_bin()?,
        };
        let (emulator, kubeconfig, owned) = match self.kubeconfig {
            Some(path) => (None, path, None),
            None => {
                let emu = Emulator::builder().start().await?;
                for yaml in &self.yaml {
                    emu.apply_yaml(yaml).await?;
                }
                let path = unique_temp_path("kubeconfig");
                emu.write_kubeconfig(&path)?;
                (Some(emu), path.clone(), Some(path))
            }
        };
        let envs = self
            .envs
            .into_iter()
            .chain([(OsString::from("KUBECONFIG"), kubeconfig.clone().into_os_string())]);
        let process = KopfProcess::spawn_program(
            &kopf,
            std::iter::once(OsString::from("run"))
                .chain(self.args)
                .chain(self.plugins.into_iter().map(PathBuf::into_os_string)),
            envs,
        )?;
        Ok(KopfRunner {
            process,
            emulator,
            kubeconfig,
            owned_kubeconfig: owned,
        })
    }
}

/// A running operator: the real `kopf` binary with the plugin under test, on the emulator
/// or a cluster. Stop it with [`KopfRunner::stop`]; dropping it kills the process and
/// shuts nothing else down (call `stop` to get the exit status and the whole log).
#[derive(Debug)]
pub struct KopfRunner {
    process: KopfProcess,
    emulator: Option<EmulatorHandle>,
    kubeconfig: PathBuf,
    owned_kubeconfig: Option<PathBuf>,
}

/// How a [`KopfRunner`] ended.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// The exit status (0 after a graceful stop).
    pub status: ExitStatus,
    /// The operator's stderr, line by line.
    pub lines: Vec<String>,
}

impl Stopped {
    /// The whole log as one string.
    pub fn log(&self) -> String {
        self.lines.join("\n")
    }
}

impl KopfRunner {
    /// A runner of these plugins (`.so` files, e.g. from [`cdylib_path`]).
    pub fn builder(plugin: impl Into<PathBuf>) -> KopfRunnerBuilder {
        KopfRunnerBuilder {
            plugins: vec![plugin.into()],
            kopf_bin: None,
            kubeconfig: None,
            yaml: Vec::new(),
            args: ["-A", "--standalone", "--verbose"].map(OsString::from).to_vec(),
            envs: Vec::new(),
        }
    }

    /// The emulator the operator runs against (`None` with a given kubeconfig).
    pub fn emulator(&self) -> Option<&EmulatorHandle> {
        self.emulator.as_ref()
    }

    /// The kubeconfig the operator uses (for kubectl or a kube client in the test).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The operator's stderr lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.process.lines()
    }

    /// The operator's log so far, as one string.
    pub fn log(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits until a log line contains `needle`; fails with the log if the operator exits
    /// or the deadline passes first.
    pub async fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, RunnerError> {
        self.process.wait_for_line_async(needle, timeout).await
    }

    /// Stops the operator gracefully (SIGTERM, as Kubernetes does), waits up to `timeout`
    /// for it to exit (then kills it and fails), and shuts the emulator down.
    pub async fn stop(mut self, timeout: Duration) -> Result<Stopped, RunnerError> {
        let status = match self.process.try_wait() {
            Some(status) => status,
            None => {
                self.process.signal("TERM")?;
                self.process.wait_exit_async(timeout).await?
            }
        };
        if let Some(emu) = self.emulator.take() {
            emu.shutdown().await;
        }
        Ok(Stopped {
            status,
            lines: self.process.lines(),
        })
    }
}

impl Drop for KopfRunner {
    fn drop(&mut self) {
        if let Some(path) = &self.owned_kubeconfig {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A fresh path in the temporary directory (the process id and a counter keep parallel
/// tests apart).
fn unique_temp_path(what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("kopf-runner-{}-{n}.{what}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> KopfProcess {
        KopfProcess::spawn_program("sh", ["-c", script], std::iter::empty::<(&str, &str)>())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn lines_signals_and_exit_statuses() {
        // Runs until signalled: `exec` makes the signal reach the waiting program itself.
        let mut p = sh("echo starting >&2; echo ready >&2; exec tail -f /dev/null");
        let line = p.wait_for_line("ready", Duration::from_secs(10)).unwrap();
        assert_eq!(line, "ready");
        assert_eq!(p.lines(), ["starting", "ready"]);
        p.signal("TERM").unwrap();
        let status = p.wait_exit(Duration::from_secs(10)).unwrap();
        assert!(!status.success());
    }

    #[test]
    fn an_early_exit_fails_the_wait_with_the_log() {
        let mut p = sh("echo boom >&2; exit 3");
        match p.wait_for_line("never", Duration::from_secs(10)) {
            Err(RunnerError::Exited { status, log, .. }) => {
                assert_eq!(status.code(), Some(3));
                assert_eq!(log, "boom");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn eventually_returns_the_value_or_times_out() {
        let mut n = 0;
        let v = eventually(Duration::from_secs(10), "three polls", || {
            n += 1;
            (n == 3).then_some(n)
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
        let e = eventually(Duration::from_millis(50), "nothing", || None::<()>)
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("timed out after 50ms waiting for nothing"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_missing_plugin_or_a_kubeconfig_with_yaml_is_refused() {
        let e = KopfRunner::builder("/nonexistent/libx.so")
            .start()
            .await
            .unwrap_err();
        assert!(matches!(e, RunnerError::PluginNotFound(_)), "{e}");
        let e = KopfRunner::builder("/nonexistent/libx.so")
            .kubeconfig("/nonexistent/kubeconfig")
            .apply_yaml("{}")
            .start()
            .await
            .unwrap_err();
        assert!(matches!(e, RunnerError::Usage(_)), "{e}");
    }
}
