//! The tutorial (docs/tutorial.md) shows the crate of examples/18-ephemeral-volume-claims,
//! which the workspace compiles and tests: the code and the CRD in the text are that crate's.

use kopf_e2e::workspace_root;

/// The fenced block of `lang` that follows the first line containing `after`.
fn block_after(doc: &str, after: &str, lang: &str) -> String {
    fenced_block_after(doc, after, lang, "```")
}

/// [`block_after`] with a fence of its own (four backticks around code that holds three).
fn fenced_block_after(doc: &str, after: &str, lang: &str, fence: &str) -> String {
    let from = doc
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} not in the page"));
    let opening = format!("{fence}{lang}\n");
    let start = doc[from..].find(&opening).unwrap() + from + opening.len();
    let len = doc[start..].find(fence).unwrap();
    doc[start..start + len].to_owned()
}

#[test]
fn the_tutorial_shows_the_example_crate() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/tutorial.md")).unwrap();
    let example = workspace_root().join("examples/18-ephemeral-volume-claims");
    let read = |f: &str| std::fs::read_to_string(example.join(f)).unwrap();
    assert_eq!(
        block_after(&doc, "## 3. The handlers", "rust,ignore"),
        read("src/lib.rs")
    );
    assert_eq!(block_after(&doc, "## 2. The resource", "yaml"), read("crd.yaml"));
    assert_eq!(
        block_after(&doc, "and `deploy/obj.yaml` an object of it", "yaml"),
        read("evc.yaml")
    );
    let manifest = read("Cargo.toml");
    assert!(manifest.contains("features = [\"client\"]"), "{manifest}");
}

#[test]
fn the_embedding_page_shows_the_embedded_example() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/embedding.md")).unwrap();
    let example = workspace_root().join("examples/12-embedded");
    let read = |f: &str| std::fs::read_to_string(example.join(f)).unwrap();
    assert_eq!(block_after(&doc, "## The example", "toml"), read("Cargo.toml"));
    assert_eq!(
        fenced_block_after(&doc, "## The example", "rust,ignore", "````"),
        read("src/main.rs")
    );
    // Every builder method the page names exists on the builder.
    let embedded = std::fs::read_to_string(workspace_root().join("kopf-cli/src/embedded.rs")).unwrap();
    for method in [
        "module",
        "plugin_file",
        "namespaces",
        "clusterwide",
        "standalone",
        "peering",
        "priority",
        "liveness",
        "config",
        "options",
        "spawn",
        "wait_ready",
        "is_finished",
        "stop",
        "join",
    ] {
        assert!(
            doc.contains(&format!(".{method}(")) || doc.contains(&format!("`{method}(")),
            "{method} not on the page"
        );
        assert!(
            embedded.contains(&format!("pub fn {method}("))
                || embedded.contains(&format!("pub fn {method}<")),
            "{method} not in the API"
        );
    }
}
