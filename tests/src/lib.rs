//! Helpers shared by the end-to-end suites: locating and building the workspace's
//! artefacts (the `kopf` binary, plugin cdylibs), running `kopf` as a child process,
//! and waiting for conditions with deadlines.

pub mod bench;
pub mod cluster;
pub mod dockerfile;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

/// The cargo target directory: `$CARGO_TARGET_DIR` (relative paths resolved against the
/// workspace root), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// The cargo executable: `$CARGO` (set by cargo for tests), else `cargo`.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// A `cargo` command without the variables cargo sets for the running test (its
/// package's `CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...): some build scripts (ring's) rerun
/// when they change, so builds from different test packages would keep rebuilding the
/// dependency tree from there up (~25 s each time).
pub fn cargo_command() -> Command {
    let mut cmd = Command::new(cargo());
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let per_test = matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_CRATE_NAME"
                | "CARGO_TARGET_TMPDIR"
        ) || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_");
        if per_test {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Build profiles the helpers can build with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// `target/debug`.
    Debug,
    /// `target/release` (`--release`).
    Release,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Release => "release",
        }
    }
}

/// Runs `cargo build` once per (arguments, profile) per process; concurrent callers wait.
fn cargo_build(args: &[&str], profile: Profile) -> Result<()> {
    type Built = HashMap<(Vec<String>, Profile), ()>;
    static BUILT: OnceLock<Mutex<Built>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    // Holding the lock serialises builds in this process (cargo would block on its own lock anyway).
    let mut guard = built.lock().unwrap_or_else(|e| e.into_inner());
    let key = (args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), profile);
    if guard.contains_key(&key) {
        return Ok(());
    }
    let mut cmd = cargo_command();
    cmd.arg("build")
        .args(args)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir());
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run cargo build {args:?}"))?;
    if !out.status.success() {
        bail!(
            "cargo build {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    guard.insert(key, ());
    Ok(())
}

/// The path of a cdylib package's shared library (e.g. `fixture-raw-plugin` →
/// `target/debug/libfixture_raw_plugin.so`), building it first.
pub fn plugin_path(package: &str) -> Result<PathBuf> {
    plugin_path_with(package, Profile::Debug)
}

/// [`plugin_path`] for a chosen profile.
pub fn plugin_path_with(package: &str, profile: Profile) -> Result<PathBuf> {
    cargo_build(&["-p", package, "--lib"], profile)?;
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        package.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let path = target_dir().join(profile.dir()).join(file);
    if !path.exists() {
        bail!("built {package} but {} does not exist", path.display());
    }
    Ok(path)
}

/// The `kopf` binary, built first.
pub fn kopf_bin() -> Result<PathBuf> {
    cargo_build(&["-p", "kopf-cli", "--bin", "kopf"], Profile::Debug)?;
    let path = target_dir()
        .join("debug")
        .join(format!("kopf{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        bail!("built kopf but {} does not exist", path.display());
    }
    Ok(path)
}

/// The path of a binary target of a workspace package (e.g. `example-12-embedded`),
/// building it first.
pub fn binary_path(package: &str, bin: &str) -> Result<PathBuf> {
    cargo_build(&["-p", package, "--bin", bin], Profile::Debug)?;
    let path = target_dir()
        .join("debug")
        .join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        bail!("built {bin} but {} does not exist", path.display());
    }
    Ok(path)
}

/// Copies a shared library to a unique file name in `dir`, so that loading it in this
/// process gives a separate image (the dynamic loader dedups by file).
pub fn isolated_copy(lib: &Path, dir: &Path, tag: &str) -> Result<PathBuf> {
    let name = lib
        .file_name()
        .context("library path without a file name")?
        .to_string_lossy();
    let dest = dir.join(format!("{tag}-{name}"));
    std::fs::copy(lib, &dest).with_context(|| format!("copy {} to {}", lib.display(), dest.display()))?;
    Ok(dest)
}

/// A system shared library that is certainly not a kopf plugin (libc).
pub fn system_libc() -> Option<PathBuf> {
    if let Ok(out) = Command::new("ldconfig").arg("-p").output() {
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            if line.trim_start().starts_with("libc.so.6")
                && let Some((_, path)) = line.rsplit_once("=> ")
            {
                let path = PathBuf::from(path.trim());
                if path.exists() {
                    return Some(path);
                }
            }
        }
    }
    [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
        "/usr/lib/libc.so.6",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Runs `kopf ARGS...` to completion (for commands that exit by themselves).
pub fn run_kopf<I, S>(args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Ok(Command::new(kopf_bin()?)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()?)
}

/// A TCP port free on the loopback interface at the time of the call.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A plain HTTP/1.1 GET on the loopback interface (probes and metrics); returns the status
/// code and the body.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `condition` until it returns `Some` or `timeout` passes (the test kit's
/// [`kopf_testing::runner::wait_until`], with an `anyhow` error).
pub fn wait_for<T>(timeout: Duration, what: &str, condition: impl FnMut() -> Option<T>) -> Result<T> {
    Ok(kopf_testing::runner::wait_until(timeout, what, condition)?)
}

/// A running `kopf` child process whose stderr is collected line by line: the test kit's
/// [`kopf_testing::runner::KopfProcess`] (its methods through `Deref`), started with the
/// workspace's freshly built `kopf`.
pub struct KopfProcess(kopf_testing::runner::KopfProcess);

impl std::ops::Deref for KopfProcess {
    type Target = kopf_testing::runner::KopfProcess;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KopfProcess {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl KopfProcess {
    /// Starts `kopf ARGS...`.
    pub fn spawn<I, S>(args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Self::spawn_with_env(args, std::iter::empty::<(&str, &str)>())
    }

    /// Starts `kopf ARGS...` with extra environment variables.
    pub fn spawn_with_env<I, S, E, K, V>(args: I, envs: E) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        Self::spawn_program(kopf_bin()?, args, envs)
    }

    /// Starts any program (e.g. an application embedding the operator, see
    /// [`binary_path`]) with extra environment variables, collecting its stderr.
    pub fn spawn_program<I, S, E, K, V>(program: PathBuf, args: I, envs: E) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        Ok(Self(kopf_testing::runner::KopfProcess::spawn_program(
            program, args, envs,
        )?))
    }

    /// Waits until a stderr line contains `needle`; fails with the log so far otherwise.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        Ok(self.0.wait_for_line(needle, timeout)?)
    }

    /// Sends a signal (e.g. `TERM`, `INT`) with the system's `kill`.
    pub fn signal(&self, name: &str) -> Result<()> {
        Ok(self.0.signal(name)?)
    }

    /// Stops the process gracefully (SIGTERM) and waits up to `timeout` for a successful
    /// exit; fails with the log otherwise.
    pub fn stop_gracefully(&mut self, timeout: Duration) -> Result<()> {
        self.signal("TERM")?;
        let status = self.wait_exit(timeout)?;
        if !status.success() {
            bail!("exited with {status}:\n{}", self.lines().join("\n"));
        }
        Ok(())
    }

    /// Waits for the process to exit, up to `timeout` (then kills it and fails).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        Ok(self.0.wait_exit(timeout)?)
    }
}

/// Runs `kopf run --embedded -A -f FILE... PLUGIN` with the given `kopf` binary, waits for
/// `first_line` and then for a line saying `handler` succeeded, and stops it with SIGTERM,
/// expecting a graceful exit (0). Fails with the log otherwise.
pub fn embedded_run_succeeds(
    kopf: PathBuf,
    files: &[&Path],
    plugin: &Path,
    envs: &[(&str, &std::ffi::OsStr)],
    first_line: &str,
    handler: &str,
) -> Result<()> {
    let mut args: Vec<&std::ffi::OsStr> = vec!["run".as_ref(), "--embedded".as_ref(), "-A".as_ref()];
    for file in files {
        args.push("-f".as_ref());
        args.push(file.as_os_str());
    }
    args.push(plugin.as_os_str());
    let mut run = KopfProcess::spawn_program(kopf, args, envs.iter().copied())?;
    run.wait_for_line(first_line, Duration::from_secs(60))?;
    let succeeded = wait_for(Duration::from_secs(30), &format!("{handler} to succeed"), || {
        run.lines()
            .into_iter()
            .find(|l| l.contains(handler) && l.contains("succeeded"))
    });
    if let Err(e) = succeeded {
        bail!("{e}\n{}", run.lines().join("\n"));
    }
    run.signal("TERM")?;
    let status = run.wait_exit(Duration::from_secs(30))?;
    if !status.success() {
        bail!("kopf exited with {status}:\n{}", run.lines().join("\n"));
    }
    Ok(())
}

/// The variable that lets a run skip tests whose external tool (Python Kopf, kubectl, Go) is
/// missing. CI never sets it: there a missing tool fails the test.
pub const ALLOW_MISSING_TOOLS: &str = "KOPF_TESTS_ALLOW_MISSING_TOOLS";

/// Whether an external tool is usable: true if `probe` succeeds; otherwise a panic naming
/// the tool and how to install it, or (with [`ALLOW_MISSING_TOOLS`]`=1`) false and a line
/// saying the test was skipped.
pub fn require_tool(tool: &str, install: &str, probe: &mut Command) -> bool {
    let works = probe
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return true;
    }
    if std::env::var(ALLOW_MISSING_TOOLS).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: {tool} is missing ({ALLOW_MISSING_TOOLS}=1)");
        return false;
    }
    panic!(
        "{tool} is required by this test and is missing: {install} (or set {ALLOW_MISSING_TOOLS}=1 to skip)"
    );
}

/// [`require_tool`] for Python Kopf (`python3 -c 'import kopf'`).
pub fn python_kopf_available() -> bool {
    require_tool(
        "Python Kopf",
        "python3 -m pip install 'kopf==1.45.2'",
        Command::new("python3").args(["-c", "import kopf"]),
    )
}

/// [`require_tool`] for kubectl.
pub fn kubectl_available() -> bool {
    require_tool(
        "kubectl",
        "install kubectl (v1.32 or newer) on PATH",
        Command::new("kubectl").args(["version", "--client"]),
    )
}
