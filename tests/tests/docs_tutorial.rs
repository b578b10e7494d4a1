//! The tutorial (docs/tutorial.md) shows the crate of examples/18-ephemeral-volume-claims,
//! which the workspace compiles and tests: the code and the CRD in the text are that crate's.

use kopf_e2e::workspace_root;

/// The fenced block of `lang` that follows the first line containing `after`.
fn block_after(doc: &str, after: &str, lang: &str) -> String {
    let from = doc
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} not in the tutorial"));
    let fence = format!("```{lang}\n");
    let start = doc[from..].find(&fence).unwrap() + from + fence.len();
    let len = doc[start..].find("```").unwrap();
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
