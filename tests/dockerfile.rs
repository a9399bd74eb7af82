//! No Docker engine runs here, so check what can be checked without one: the Dockerfile builds
//! the binary this package defines, copies files that exist, and runs as a non-root user.

use std::path::Path;

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
        .expect("Dockerfile")
}

#[test]
fn builds_the_linkpush_binary_locked() {
    let d = dockerfile();
    assert!(
        d.contains("cargo build --locked --release --bin linkpush"),
        "{d}"
    );
    assert_eq!(env!("CARGO_PKG_NAME"), "linkpush");
    assert!(d.contains("COPY --from=build /src/target/release/linkpush /usr/local/bin/linkpush"));
    assert!(d.contains("ENTRYPOINT [\"/usr/local/bin/linkpush\"]"));
}

#[test]
fn copies_only_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for line in dockerfile()
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(
                root.join(src).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
        }
    }
}

#[test]
fn config_lands_where_linkpush_looks_for_it() {
    let d = dockerfile();
    assert!(d.contains("COPY config/linkpush.toml /etc/linkpush/linkpush.toml"));
    assert!(d.contains("ENV LINKPUSH_CONFIG=/etc/linkpush/linkpush.toml"));
}

#[test]
fn runs_as_non_root() {
    let d = dockerfile();
    let user = d
        .lines()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert_ne!(user.trim(), "USER root");
    assert_ne!(user.trim(), "USER 0");
}
