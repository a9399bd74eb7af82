//! What can be checked in the Dockerfile without building it (tests/container.rs builds and runs
//! the final stage; the build stage needs a registry): it builds this package's binary static
//! and stripped behind a dependency-cache layer, the runtime stage pulls nothing, and the image
//! runs as a numeric non-root user with a health check, its config where linkpush looks, and
//! the ports that config names.

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions() -> Vec<String> {
    let text = read("Dockerfile").replace("\\\n", " ");
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The instructions of the last stage (from its `FROM`).
fn final_stage() -> Vec<String> {
    let all = instructions();
    let from = all
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    all[from..].to_vec()
}

fn has(lines: &[String], line: &str) -> bool {
    lines.iter().any(|l| l == line)
}

#[test]
fn the_runtime_stage_is_scratch_with_the_binary_and_its_config() {
    let stage = final_stage();
    assert_eq!(stage[0], "FROM scratch", "no base image to pull");
    assert!(
        has(&stage, "COPY --from=build /linkpush /linkpush"),
        "{stage:#?}"
    );
    assert!(has(
        &stage,
        "COPY config/container.toml /etc/linkpush/linkpush.toml"
    ));
    assert!(has(
        &stage,
        "ENV LINKPUSH_CONFIG=/etc/linkpush/linkpush.toml"
    ));
    assert!(has(&stage, r#"ENTRYPOINT ["/linkpush"]"#));
    assert!(has(&stage, "STOPSIGNAL SIGTERM"));
}

#[test]
fn the_build_stage_builds_this_package_static_from_the_lock_file() {
    let all = instructions();
    assert_eq!(env!("CARGO_PKG_NAME"), "linkpush");
    assert!(
        all.iter()
            .any(|l| l.starts_with("FROM ") && l.ends_with(" AS build"))
    );
    assert!(has(
        &all,
        r#"ENV RUSTFLAGS="-C target-feature=+crt-static""#
    ));
    let builds: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].contains("cargo build --locked --profile container --target"))
        .collect();
    assert_eq!(
        builds.len(),
        2,
        "dependencies, then the real source: {all:#?}"
    );
    let copy_src = all
        .iter()
        .position(|l| l == "COPY src ./src")
        .expect("COPY src");
    assert!(
        builds[0] < copy_src && copy_src < builds[1],
        "the dependency layer is built before the source is copied in"
    );
    assert!(all[builds[1]].contains("touch src/main.rs src/lib.rs"));
}

#[test]
fn the_container_profile_has_no_debug_info() {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).expect("Cargo.toml");
    let profile = &manifest["profile"]["container"];
    assert_eq!(profile["inherits"].as_str(), Some("release"));
    assert_eq!(profile["debug"].as_bool(), Some(false));
    assert_eq!(profile["strip"].as_bool(), Some(true));
}

#[test]
fn copies_only_files_that_exist() {
    for line in instructions()
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(
                Path::new(ROOT).join(src).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
        }
    }
}

#[test]
fn runs_as_a_numeric_non_root_user() {
    let stage = final_stage();
    let user = stage
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    // Kubernetes' runAsNonRoot can only verify a numeric user.
    let ids: Vec<u32> = user
        .split(':')
        .map(|id| {
            id.parse()
                .unwrap_or_else(|_| panic!("USER {user} is not numeric"))
        })
        .collect();
    assert_eq!(ids.len(), 2, "USER uid:gid");
    assert!(ids.iter().all(|&id| id != 0), "USER {user}");
}

#[test]
fn the_health_check_runs_the_binary() {
    let stage = final_stage();
    let check = stage
        .iter()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    assert!(
        check.ends_with(r#"CMD ["/linkpush", "healthcheck"]"#),
        "exec form, no shell in the image: {check}"
    );
}

#[test]
fn exposes_the_ports_of_the_image_config() {
    let config: toml::Table = toml::from_str(&read("config/container.toml")).expect("config");
    let port = |addr: &str| addr.rsplit_once(':').expect("host:port").1.to_owned();
    let proxy = port(
        config["server"]["listen"]
            .as_str()
            .expect("one listen address"),
    );
    let admin = config["admin"]["listen"].as_str().expect("admin.listen");
    assert!(
        admin.starts_with("0.0.0.0:"),
        "reachable from outside: {admin}"
    );
    let expose = format!("EXPOSE {proxy} {}", port(admin));
    assert!(has(&final_stage(), &expose), "{expose}");
}

#[test]
fn carries_oci_labels_in_step_with_the_package() {
    let stage = final_stage().join("\n");
    for (key, value) in [
        ("title", env!("CARGO_PKG_NAME")),
        ("version", env!("CARGO_PKG_VERSION")),
        ("licenses", env!("CARGO_PKG_LICENSE")),
        ("description", env!("CARGO_PKG_DESCRIPTION")),
    ] {
        let label = format!("org.opencontainers.image.{key}=\"{value}\"");
        assert!(stage.contains(&label), "{label} missing");
    }
}

#[test]
fn the_build_context_leaves_out_build_output_history_and_keys() {
    let ignore = read(".dockerignore");
    // certs: where the README and the compose file have private keys made.
    for entry in ["target", ".git", "certs", "deploy/certs"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            "{entry} not ignored"
        );
    }
}
