//! Dockerfiles without a container engine: parse them into stages, and dry-run a build
//! stage's `RUN` script with stand-ins for `cargo` and `strip` to see which files it leaves
//! for the later stages' `COPY --from` lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// One instruction: `(INSTRUCTION, arguments)`, continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Upper-case instruction (`FROM`, `RUN`, `COPY`...).
    pub name: String,
    /// Everything after it, trimmed.
    pub args: String,
}

/// A build stage: its `FROM` image, its `AS` name, and its instructions after `FROM`.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The image (`${RUST_IMAGE}`, `scratch`...).
    pub from: String,
    /// The `AS` name, if any.
    pub name: Option<String>,
    /// The instructions of the stage.
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// The arguments of every instruction `name` in this stage.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|i| i.name == name)
            .map(|i| i.args.as_str())
            .collect()
    }
}

/// A parsed Dockerfile: global `ARG`s (before the first `FROM`) and stages.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// Global `ARG NAME=default` (defaults only).
    pub args: BTreeMap<String, String>,
    /// The stages in order.
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// Parses Dockerfile text (comments dropped, `\` continuations joined).
    pub fn parse(text: &str) -> Self {
        let mut instructions = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(part) => {
                    current.push_str(part);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    let all = current.trim();
                    let (name, args) = all.split_once(' ').unwrap_or((all, ""));
                    instructions.push(Instruction {
                        name: name.to_uppercase(),
                        args: args.trim().to_owned(),
                    });
                    current.clear();
                }
            }
        }
        let mut args = BTreeMap::new();
        let mut stages: Vec<Stage> = Vec::new();
        for ins in instructions {
            if ins.name == "FROM" {
                let mut words = ins.args.split_whitespace();
                let from = words.next().unwrap_or_default().to_owned();
                let name = match (words.next(), words.next()) {
                    (Some(kw), Some(n)) if kw.eq_ignore_ascii_case("as") => Some(n.to_owned()),
                    _ => None,
                };
                stages.push(Stage {
                    from,
                    name,
                    instructions: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.instructions.push(ins);
            } else if ins.name == "ARG"
                && let Some((k, v)) = ins.args.split_once('=')
            {
                args.insert(k.to_owned(), v.to_owned());
            }
        }
        Self { args, stages }
    }

    /// Reads and parses a file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        Ok(Self::parse(&text))
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_deref() == Some(name))
    }
}

/// `ARG NAME=default` of a stage.
pub fn stage_arg<'a>(stage: &'a Stage, name: &str) -> Option<&'a str> {
    stage
        .all("ARG")
        .into_iter()
        .find_map(|a| a.strip_prefix(&format!("{name}=")))
}

/// What a dry run of a `RUN` script did.
#[derive(Debug)]
pub struct DryRun {
    /// The stand-in root: the script's `/out` is `root/out`, `/cache` is `root/cache`.
    pub root: PathBuf,
    /// The arguments of each `cargo` call.
    pub cargo_calls: Vec<String>,
}

impl DryRun {
    /// The file the script left at an absolute image path (`/out/...`).
    pub fn file(&self, image_path: &str) -> PathBuf {
        self.root.join(image_path.trim_start_matches('/'))
    }
}

/// Runs a `RUN` instruction's shell script (its `--mount` options dropped) in `root`, with
/// `/out` and `/cache` moved under `root`, the given environment (the stage's ARGs), and
/// stand-ins: `cargo` records its arguments and creates `outputs` (file names such as
/// `kopf` or `libx.so`) in `<--target-dir>/release/`; `strip -o OUT IN` copies IN to OUT.
pub fn dry_run(run_args: &str, root: &Path, env: &[(&str, &str)], outputs: &[String]) -> Result<DryRun> {
    let mut script = run_args.trim();
    while let Some(rest) = script.strip_prefix("--mount=") {
        script = rest
            .split_once(char::is_whitespace)
            .map_or("", |(_, r)| r)
            .trim_start();
    }
    let root_str = root.to_str().context("a non-UTF-8 temporary path")?;
    let script = script
        .replace("/out", &format!("{root_str}/out"))
        .replace("/cache", &format!("{root_str}/cache"));
    let calls = root.join("cargo-calls");
    let prelude = format!(
        r#"cargo() {{
  echo "$*" >> '{calls}'
  dir=target
  while [ $# -gt 0 ]; do
    if [ "$1" = "--target-dir" ]; then dir="$2"; fi
    shift
  done
  mkdir -p "$dir/release"
  for f in {outputs}; do echo fake > "$dir/release/$f"; done
}}
strip() {{
  out=""; src=""
  while [ $# -gt 0 ]; do
    case "$1" in -o) out="$2"; shift ;; -*) ;; *) src="$1" ;; esac
    shift
  done
  cp "$src" "$out"
}}
"#,
        calls = calls.display(),
        outputs = outputs.join(" "),
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .current_dir(root)
        .envs(env.iter().copied())
        .output()
        .context("run sh")?;
    if !out.status.success() {
        bail!(
            "the RUN script failed ({}):\n{}\nscript:\n{script}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cargo_calls = std::fs::read_to_string(&calls)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    Ok(DryRun {
        root: root.to_path_buf(),
        cargo_calls,
    })
}
