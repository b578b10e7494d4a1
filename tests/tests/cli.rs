//! The `kopf` binary: its command line, and one clear line for every kind of broken plugin.

use std::time::Duration;

use kopf_e2e::{KopfProcess, plugin_path, run_kopf, system_libc};

/// Asserts exit code 1 and exactly one stderr line starting with `kopf: error: `; returns it.
fn one_line_failure(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit code 1, stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one stderr line, got:\n{stderr}");
    assert!(
        lines[0].starts_with("kopf: error: "),
        "unexpected line: {}",
        lines[0]
    );
    lines[0].to_owned()
}

#[test]
fn missing_plugin_file() {
    let out = run_kopf(["inspect", "/nonexistent/libnothing.so"]).unwrap();
    let line = one_line_failure(&out);
    assert_eq!(
        line,
        "kopf: error: plugin file not found: /nonexistent/libnothing.so"
    );
    // `kopf run` goes through the same loader.
    let out = run_kopf(["run", "--standalone", "/nonexistent/libnothing.so"]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .unwrap_or("")
            .contains("plugin file not found: /nonexistent/libnothing.so")
    );
}

#[test]
fn text_file_is_not_a_shared_library() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handlers.so");
    std::fs::write(&path, "def handler(spec, **_): return spec\n".repeat(50)).unwrap();
    let line = one_line_failure(&run_kopf(["inspect".as_ref(), path.as_os_str()]).unwrap());
    assert!(
        line.contains(&format!("{} is not a shared library: ", path.display())),
        "{line}"
    );
}

#[test]
fn directory_is_not_a_shared_library() {
    let dir = tempfile::tempdir().unwrap();
    let line = one_line_failure(&run_kopf(["inspect".as_ref(), dir.path().as_os_str()]).unwrap());
    assert!(
        line.ends_with("is not a shared library: it is a directory"),
        "{line}"
    );
}

#[test]
fn shared_library_without_kopf_symbols() {
    let libc = system_libc().expect("no libc.so.6 found on this system");
    let line = one_line_failure(&run_kopf(["inspect".as_ref(), libc.as_os_str()]).unwrap());
    assert_eq!(
        line,
        format!(
            "kopf: error: {} is not a kopf plugin (no kopf ABI symbols; was it built with the kopf SDK as a cdylib?)",
            libc.display()
        )
    );
}

#[test]
fn plugin_of_another_abi_revision() {
    let lib = plugin_path("fixture-broken-revision").unwrap();
    let line = one_line_failure(&run_kopf(["inspect".as_ref(), lib.as_os_str()]).unwrap());
    assert_eq!(
        line,
        format!(
            "kopf: error: {} was built for kopf ABI revision 999, but this kopf supports revision {}; \
             rebuild the plugin against a matching kopf SDK",
            lib.display(),
            kopf_abi::ABI_REVISION
        )
    );
}

#[test]
fn plugin_with_an_incompatible_layout() {
    let lib = plugin_path("fixture-broken-layout").unwrap();
    let line = one_line_failure(&run_kopf(["inspect".as_ref(), lib.as_os_str()]).unwrap());
    let prefix = format!(
        "kopf: error: {} has an incompatible kopf ABI layout (built with a different kopf-abi version?): ",
        lib.display()
    );
    assert!(line.starts_with(&prefix), "{line}");
    let summary = &line[prefix.len()..];
    assert!(
        summary.contains("Expected: ") && summary.contains("Found: "),
        "{summary}"
    );
    assert!(summary.len() < 300, "summary too long: {summary}");

    // With --debug, abi_stable's full report follows.
    let out = run_kopf(["inspect".as_ref(), "--debug".as_ref(), lib.as_os_str()]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().count() > 20,
        "expected the full layout report with --debug:\n{stderr}"
    );
    assert!(stderr.contains("kopf: error detail:"), "{stderr}");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = run_kopf(["run", "--no-such-flag"]).unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    let out = run_kopf(["frobnicate"]).unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn all_namespaces_conflicts_with_namespace() {
    let out = run_kopf(["run", "-A", "-n", "default"]).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn bad_namespace_pattern_is_a_usage_error() {
    let out = run_kopf(["run", "-n", "Not_Valid"]).unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid character"));
    let out = run_kopf(["run", "-L", "https://0.0.0.0:8080/healthz"]).unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_help_lists_every_flag_and_env_var() {
    let out = run_kopf(["run", "--help"]).unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "-v, --verbose",
        "-d, --debug",
        "-q, --quiet",
        "--log-format",
        "--log-refkey",
        "--log-prefix",
        "--no-log-prefix",
        "-n, --namespace",
        "-A, --all-namespaces",
        "--standalone",
        "-P, --peering",
        "-p, --priority",
        "--dev",
        "-L, --liveness",
        "[PLUGIN]...",
    ] {
        assert!(help.contains(flag), "`kopf run --help` lacks {flag:?}:\n{help}");
    }
    for var in [
        "KOPF_RUN_VERBOSE",
        "KOPF_RUN_DEBUG",
        "KOPF_RUN_QUIET",
        "KOPF_RUN_LOG_FORMAT",
        "KOPF_RUN_LOG_REFKEY",
        "KOPF_RUN_LOG_PREFIX",
        "KOPF_RUN_NO_LOG_PREFIX",
        "KOPF_RUN_NAMESPACE",
        "KOPF_RUN_ALL_NAMESPACES",
        "KOPF_RUN_STANDALONE",
        "KOPF_RUN_PEERING",
        "KOPF_RUN_PRIORITY",
        "KOPF_RUN_DEV",
        "KOPF_RUN_LIVENESS",
    ] {
        assert!(help.contains(var), "`kopf run --help` lacks {var}:\n{help}");
    }
    assert!(help.contains("plain") && help.contains("full") && help.contains("json"));
    assert!(help.contains("Exit codes:"), "{help}");
}

#[test]
fn version_reports_abi_revision() {
    let out = run_kopf(["version"]).unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("kopf {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(
        text.contains(&format!("plugin ABI revision: {}", kopf_abi::ABI_REVISION)),
        "{text}"
    );
    let out = run_kopf(["--version"]).unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("kopf "));
}

#[test]
fn inspect_raw_plugin_table() {
    let lib = plugin_path("fixture-raw-plugin").unwrap();
    let out = run_kopf(["inspect".as_ref(), lib.as_os_str()]).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("PLUGIN") && lines[0].contains("SELECTOR"),
        "{table}"
    );
    let row = |id: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().nth(2) == Some(id))
            .unwrap_or_else(|| panic!("no row for {id}:\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("create_fn"),
        [
            "fixture-raw-plugin",
            "create",
            "create_fn",
            "kopfexamples.v1.kopf.dev",
            "-",
            "-",
            "sync"
        ]
    );
    assert_eq!(row("panic_fn")[5], "retries=3");
    assert_eq!(row("call_host")[3..5], ["pods.v1", "label:app=x"]);
    assert_eq!(row("daemon_fn")[3], "EVERYTHING");
    assert_eq!(row("daemon_fn")[6], "async");
    assert_eq!(row("startup_fn")[3], "-");
}

#[test]
fn inspect_json_is_the_combined_descriptions() {
    let lib = plugin_path("fixture-raw-plugin").unwrap();
    let out = run_kopf(["inspect".as_ref(), "--json".as_ref(), lib.as_os_str()]).unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc[0]["path"], lib.display().to_string());
    assert_eq!(doc[0]["description"]["plugin"]["name"], "fixture-raw-plugin");
    assert_eq!(doc[0]["description"]["handlers"].as_array().unwrap().len(), 5);
}

#[test]
fn inspect_minimal_example() {
    let lib = plugin_path("example-01-minimal").unwrap();
    let out = run_kopf(["inspect".as_ref(), lib.as_os_str()]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("create"))
        .unwrap_or_else(|| panic!("no create handler in:\n{table}"));
    assert!(
        row.split_whitespace()
            .nth(3)
            .is_some_and(|s| s.starts_with("kopfexamples")),
        "{table}"
    );
}

#[test]
fn run_loads_plugins_and_stops_gracefully_on_sigterm() {
    let lib = plugin_path("fixture-raw-plugin").unwrap();
    let mut kopf = KopfProcess::spawn([
        "run".as_ref(),
        "--embedded".as_ref(),
        "--standalone".as_ref(),
        "-n".as_ref(),
        "default".as_ref(),
        lib.as_os_str(),
    ])
    .unwrap();
    let line = kopf
        .wait_for_line(
            "create handler \"create_fn\" for kopfexamples.v1.kopf.dev",
            Duration::from_secs(30),
        )
        .unwrap();
    // Kopf's "full" format: [timestamp] target [LEVEL   ] message.
    assert!(
        line.starts_with('[') && line.contains("] kopf.activities") && line.contains("[INFO    ]"),
        "{line}"
    );
    kopf.wait_for_line("The operator is ready", Duration::from_secs(30))
        .unwrap();
    kopf.signal("TERM").unwrap();
    let status = kopf.wait_exit(Duration::from_secs(30)).unwrap();
    assert_eq!(status.code(), Some(0), "{}", kopf.lines().join("\n"));
    assert!(
        kopf.lines()
            .iter()
            .any(|l| l.contains("Signal SIGTERM is received"))
    );
}

#[test]
fn run_with_json_logs_and_sigint() {
    let lib = plugin_path("fixture-raw-plugin").unwrap();
    let mut kopf = KopfProcess::spawn([
        "run".as_ref(),
        "--embedded".as_ref(),
        "--log-format=json".as_ref(),
        "-A".as_ref(),
        lib.as_os_str(),
    ])
    .unwrap();
    let line = kopf
        .wait_for_line("The operator is ready", Duration::from_secs(30))
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(doc["severity"], "info");
    assert_eq!(doc["target"], "kopf.reactor");
    kopf.signal("INT").unwrap();
    assert_eq!(kopf.wait_exit(Duration::from_secs(30)).unwrap().code(), Some(0));
}

#[test]
fn run_fails_with_exit_1_on_a_broken_plugin() {
    let good = plugin_path("fixture-raw-plugin").unwrap();
    let bad = plugin_path("fixture-broken-revision").unwrap();
    let out = run_kopf(["run".as_ref(), good.as_os_str(), bad.as_os_str()]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("kopf: error: ") && last.contains("revision 999"),
        "{stderr}"
    );
}

#[test]
fn plugin_with_an_unreadable_description() {
    let lib = plugin_path("fixture-broken-describe").unwrap();
    let line = one_line_failure(&run_kopf(["inspect".as_ref(), lib.as_os_str()]).unwrap());
    assert!(
        line.starts_with(&format!(
            "kopf: error: {}: describe failed: the plugin description is not valid JSON: ",
            lib.display()
        )),
        "{line}"
    );
}

#[test]
fn run_options_come_from_kopf_run_env_vars() {
    let lib = plugin_path("fixture-raw-plugin").unwrap();
    let mut kopf = KopfProcess::spawn_with_env(
        ["run".as_ref(), lib.as_os_str()],
        [
            ("KOPF_RUN_LOG_FORMAT", "json"),
            ("KOPF_RUN_NAMESPACE", "ns-*,!ns-x"),
            ("KOPF_RUN_STANDALONE", "1"),
            ("KOPF_RUN_EMBEDDED", "1"),
        ],
    )
    .unwrap();
    let line = kopf
        .wait_for_line("The operator is ready", Duration::from_secs(30))
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains(r#"in namespaces matching ["ns-*", "!ns-x"]"#),
        "{line}"
    );
    kopf.signal("TERM").unwrap();
    assert_eq!(kopf.wait_exit(Duration::from_secs(30)).unwrap().code(), Some(0));

    // An env var conflicting with a flag is a usage error too.
    let out = std::process::Command::new(kopf_e2e::kopf_bin().unwrap())
        .args(["run", "-A"])
        .env("KOPF_RUN_NAMESPACE", "default")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The text of one help section: from `heading` to the next line that ends with `:` at
/// the start of a line (the next heading), or to the end.
fn help_section<'a>(help: &'a str, heading: &str) -> &'a str {
    let start = help
        .find(&format!("\n{heading}:\n"))
        .unwrap_or_else(|| panic!("no {heading:?} section:\n{help}"));
    let rest = &help[start + heading.len() + 3..];
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| {
            let line = rest[i..].lines().next().unwrap_or_default();
            !line.starts_with(' ') && line.ends_with(':')
        })
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn run_help_groups_the_flags_under_headings() {
    let out = run_kopf(["run", "--help"]).unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for (heading, flags) in [
        (
            "Logging",
            &[
                "--verbose",
                "--quiet",
                "--log-format",
                "--no-log-prefix",
                "--post-logs",
            ][..],
        ),
        ("Namespaces", &["--namespace", "--all-namespaces"]),
        (
            "Peering and leader election",
            &["--standalone", "--peering", "--priority", "--dev", "--lease"],
        ),
        ("Probes and metrics", &["--liveness"]),
        (
            "Embedded emulator (no cluster)",
            &["--embedded", "--embedded-apply", "--embedded-kubeconfig"],
        ),
        ("Admission webhooks", &["--webhook-server", "--webhook-managed"]),
    ] {
        let section = help_section(&help, heading);
        for flag in flags {
            assert!(section.contains(flag), "{flag} not under {heading:?}:\n{section}");
        }
    }
    // `run` is the long-running command: its exit codes speak of signals.
    assert!(help.contains("0  graceful stop (SIGINT/SIGTERM)"), "{help}");
    assert!(help.contains("137  a graceful stop unfinished"), "{help}");
}

#[test]
fn the_top_level_help_gives_the_exit_codes_of_every_command() {
    let out = run_kopf(["--help"]).unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Exit codes:\n  0  done (run and emulator: a graceful stop on SIGINT/SIGTERM)\n"),
        "{help}"
    );
    assert!(help.contains("137  run only"), "{help}");
}

#[test]
fn one_shot_commands_do_not_print_the_exit_codes_of_run() {
    for command in [
        "inspect",
        "peering",
        "rbac",
        "new",
        "crd",
        "completions",
        "freeze",
        "resume",
    ] {
        let out = run_kopf([command, "--help"]).unwrap();
        assert_eq!(out.status.code(), Some(0), "{command}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(!help.contains("graceful stop"), "kopf {command} --help:\n{help}");
        assert!(
            help.contains("Exit codes:\n  0  done\n"),
            "kopf {command} --help:\n{help}"
        );
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef kopf"),
        ("fish", "complete -c kopf"),
        ("elvish", "edit:completion:arg-completer[kopf]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = run_kopf(["completions", shell]).unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        // The subcommands and run's flags are completed.
        assert!(
            script.contains("log-format") && script.contains("rbac"),
            "{shell}:\n{script}"
        );
    }
    let out = run_kopf(["completions", "tcsh"]).unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
}
