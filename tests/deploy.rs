//! deploy/: the compose file and the Kubernetes manifest name ports, paths and settings that
//! must agree with the image (Dockerfile) and its configuration (config/container.toml). Nothing
//! here runs a cluster; the files are parsed and every name they share with the image is checked,
//! so changing a port or a path in one place and not the other fails here.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use linkpush::config::{Config, TlsConfig};
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn yaml(file: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {y:?}"))
}

fn list<'a>(y: &'a Yaml, what: &str) -> &'a [Yaml] {
    y.as_vec().map_or_else(
        || panic!("{what}: expected a list, got {y:?}"),
        Vec::as_slice,
    )
}

// ===== the image =====

/// What the image fixes: its configuration, where it reads it, and its user.
struct Image {
    config: Config,
    config_text: String,
    config_path: String,
    uid: i64,
}

impl Image {
    fn load() -> Image {
        let config_text = read("config/container.toml");
        let config =
            Config::from_toml_str(&config_text, Path::new("config/container.toml"), &|_| None)
                .expect("the image's config is valid");
        let dockerfile = read("Dockerfile");
        let config_path = dockerfile
            .lines()
            .find_map(|l| l.strip_prefix("ENV LINKPUSH_CONFIG="))
            .expect("ENV LINKPUSH_CONFIG in the Dockerfile")
            .trim()
            .to_owned();
        let uid = dockerfile
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("USER "))
            .and_then(|u| u.split(':').next())
            .and_then(|u| u.trim().parse().ok())
            .expect("a numeric USER in the Dockerfile");
        Image {
            config,
            config_text,
            config_path,
            uid,
        }
    }

    fn proxy_port(&self) -> u16 {
        let ports: HashSet<u16> = self
            .config
            .server
            .listen
            .iter()
            .map(SocketAddr::port)
            .collect();
        assert_eq!(ports.len(), 1, "one proxy port in the image");
        *ports.iter().next().unwrap()
    }

    fn admin_port(&self) -> u16 {
        self.config
            .admin
            .as_ref()
            .expect("[admin] in the image")
            .listen
            .port()
    }

    fn tls(&self) -> &TlsConfig {
        let tls = self.config.server.tls.as_ref();
        tls.expect("[server.tls] in the image")
    }

    fn cert(&self) -> &Path {
        &self.tls().cert
    }

    fn key(&self) -> &Path {
        &self.tls().key
    }

    /// The directory the certificate and key are mounted at.
    fn cert_dir(&self) -> &Path {
        let dir = self.cert().parent().expect("cert directory");
        assert_eq!(
            self.key().parent(),
            Some(dir),
            "cert and key in one directory"
        );
        dir
    }

    /// Loads the image's config with `env` as the environment, as the container would; panics
    /// if a `LINKPUSH_*` variable in `env` is not one linkpush reads or its value is invalid.
    fn check_env(&self, env: &HashMap<String, String>, file: &str) -> Config {
        let asked = Mutex::new(HashSet::new());
        let lookup = |name: &str| {
            asked.lock().unwrap().insert(name.to_owned());
            env.get(name).cloned()
        };
        let config = Config::from_toml_str(
            &self.config_text,
            Path::new("config/container.toml"),
            &lookup,
        )
        .unwrap_or_else(|e| panic!("{file}: the environment breaks the config: {e}"));
        let asked = asked.into_inner().unwrap();
        for name in env.keys().filter(|n| n.starts_with("LINKPUSH_")) {
            if name == "LINKPUSH_CONFIG" {
                assert_eq!(
                    env[name], self.config_path,
                    "{file}: the config stays where the image has it"
                );
            } else {
                assert!(
                    asked.contains(name),
                    "{file}: {name} is not a linkpush setting"
                );
            }
        }
        config
    }
}

/// The host of an `http://host:port` URL.
fn url_host(url: &str) -> &str {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{url}: not http://"));
    rest.split(['/', ':']).next().unwrap_or(rest)
}

// ===== compose =====

const COMPOSE: &str = "deploy/docker-compose.yml";

fn compose() -> Yaml {
    yaml(COMPOSE).into_iter().next().expect("one document")
}

fn compose_linkpush(doc: &Yaml) -> &Yaml {
    let svc = &doc["services"]["linkpush"];
    assert!(!svc.is_badvalue(), "a `linkpush` service");
    svc
}

fn compose_env(svc: &Yaml) -> HashMap<String, String> {
    let env = svc["environment"].as_hash().expect("environment as a map");
    env.iter()
        .map(|(k, v)| {
            (
                str_of(k, "variable").to_owned(),
                str_of(v, "value").to_owned(),
            )
        })
        .collect()
}

#[test]
fn compose_publishes_the_image_ports() {
    let image = Image::load();
    let doc = compose();
    let svc = compose_linkpush(&doc);

    // "[ip:]host:container[/proto]": the container side is the last field.
    let published: HashSet<u16> = list(&svc["ports"], "ports")
        .iter()
        .map(|p| {
            let p = str_of(p, "port");
            let container = p.rsplit(':').next().unwrap().trim_end_matches("/tcp");
            container.parse().unwrap_or_else(|_| panic!("port {p}"))
        })
        .collect();

    assert_eq!(
        published,
        HashSet::from([image.proxy_port(), image.admin_port()])
    );
}

#[test]
fn compose_mounts_the_certificates_where_the_image_config_reads_them() {
    let image = Image::load();
    let doc = compose();
    let svc = compose_linkpush(&doc);

    let mounts: Vec<(&str, &str, bool)> = list(&svc["volumes"], "volumes")
        .iter()
        .map(|v| {
            let parts: Vec<&str> = str_of(v, "volume").split(':').collect();
            (parts[0], parts[1], parts.get(2) == Some(&"ro"))
        })
        .collect();

    let target = image.cert_dir().to_str().unwrap();
    let (source, _, read_only) = mounts
        .iter()
        .find(|(_, t, _)| *t == target)
        .unwrap_or_else(|| panic!("no volume at {target}: {mounts:?}"));
    assert!(read_only, "certificates mounted read-only");
    // Relative to the compose file; README tells to put tls.crt and tls.key there.
    assert_eq!(*source, "./certs");
    for (_, target, _) in &mounts {
        if target.ends_with(".toml") {
            assert_eq!(
                *target, image.config_path,
                "a mounted config replaces the image's"
            );
        }
    }
}

#[test]
fn compose_checks_health_with_the_binary_and_outwaits_the_drain() {
    let image = Image::load();
    let doc = compose();
    let svc = compose_linkpush(&doc);

    let test: Vec<&str> = list(&svc["healthcheck"]["test"], "healthcheck.test")
        .iter()
        .map(|t| str_of(t, "healthcheck.test"))
        .collect();
    let grace =
        linkpush::config::parse_duration(str_of(&svc["stop_grace_period"], "stop_grace_period"))
            .expect("stop_grace_period");

    assert_eq!(test, ["CMD", "/linkpush", "healthcheck"]);
    assert_eq!(str_of(&svc["stop_signal"], "stop_signal"), "SIGTERM");
    assert!(grace > image.config.server.shutdown_timeout, "{grace:?}");
    let context = Path::new(ROOT)
        .join("deploy")
        .join(str_of(&svc["build"]["context"], "build.context"));
    assert!(
        context.join("Dockerfile").exists(),
        "build.context is the repository"
    );
}

#[test]
fn compose_environment_is_valid_and_points_at_the_app_service() {
    let image = Image::load();
    let doc = compose();
    let env = compose_env(compose_linkpush(&doc));

    image.check_env(&env, COMPOSE);

    let upstream = env
        .get("LINKPUSH_UPSTREAM_URL")
        .expect("LINKPUSH_UPSTREAM_URL");
    let services = doc["services"].as_hash().expect("services");
    let host = url_host(upstream);
    assert!(
        services.keys().any(|k| k.as_str() == Some(host)),
        "the upstream {upstream} is not a service of the compose file"
    );
    assert_ne!(host, "linkpush");
}

// ===== Kubernetes =====

const KUBE: &str = "deploy/kubernetes.yaml";

fn kube(kind: &str) -> Yaml {
    yaml(KUBE)
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("a {kind} in {KUBE}"))
}

fn pod_spec(deployment: &Yaml) -> &Yaml {
    &deployment["spec"]["template"]["spec"]
}

fn container<'a>(pod: &'a Yaml, name: &str) -> &'a Yaml {
    list(&pod["containers"], "containers")
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("a container named {name}"))
}

/// A probe's or Service's port: a number, or the name of one of `container`'s ports.
fn resolve_port(port: &Yaml, container: &Yaml) -> i64 {
    if let Some(n) = port.as_i64() {
        return n;
    }
    let name = str_of(port, "port");
    list(&container["ports"], "ports")
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

#[test]
fn kubernetes_runs_linkpush_as_a_sidecar_of_the_app() {
    let deployment = kube("Deployment");
    let pod = pod_spec(&deployment);

    let names: Vec<&str> = list(&pod["containers"], "containers")
        .iter()
        .map(|c| str_of(&c["name"], "container name"))
        .collect();

    assert!(names.contains(&"linkpush") && names.len() >= 2, "{names:?}");
    let image = str_of(&container(pod, "linkpush")["image"], "image");
    assert!(image.starts_with("linkpush:"), "{image}");
}

#[test]
fn kubernetes_ports_and_probes_are_the_image_config_ones() {
    let image = Image::load();
    let deployment = kube("Deployment");
    let service = kube("Service");
    let pod = pod_spec(&deployment);
    let linkpush = container(pod, "linkpush");

    let declared: HashSet<i64> = list(&linkpush["ports"], "ports")
        .iter()
        .map(|p| p["containerPort"].as_i64().expect("containerPort"))
        .collect();
    assert_eq!(
        declared,
        HashSet::from([i64::from(image.proxy_port()), i64::from(image.admin_port())])
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &linkpush[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some("/healthz"), "{probe}");
        assert_eq!(
            resolve_port(&get["port"], linkpush),
            i64::from(image.admin_port()),
            "{probe}"
        );
    }
    let target = &list(&service["spec"]["ports"], "Service ports")[0]["targetPort"];
    assert_eq!(
        resolve_port(target, linkpush),
        i64::from(image.proxy_port())
    );
    let labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_hash()
        .expect("labels");
    for (key, value) in service["spec"]["selector"].as_hash().expect("selector") {
        assert_eq!(labels.get(key), Some(value), "the Service selects the pod");
    }
    let scrape_port =
        &deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"];
    assert_eq!(
        scrape_port.as_str(),
        Some(image.admin_port().to_string().as_str())
    );
}

#[test]
fn kubernetes_mounts_a_tls_secret_where_the_image_config_reads_the_certificates() {
    let image = Image::load();
    let deployment = kube("Deployment");
    let pod = pod_spec(&deployment);
    let linkpush = container(pod, "linkpush");

    let mount = list(&linkpush["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == image.cert_dir().to_str())
        .unwrap_or_else(|| panic!("no volume mounted at {}", image.cert_dir().display()));
    let volume = list(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");

    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    assert!(
        volume["secret"]["secretName"].as_str().is_some(),
        "{volume:?}"
    );
    assert!(
        volume["secret"]["items"].is_badvalue(),
        "the Secret's own key names"
    );
    // A kubernetes.io/tls Secret holds its certificate and key as tls.crt and tls.key.
    assert_eq!(image.cert().file_name().unwrap(), "tls.crt");
    assert_eq!(image.key().file_name().unwrap(), "tls.key");
    for m in list(&linkpush["volumeMounts"], "volumeMounts") {
        let path = PathBuf::from(str_of(&m["mountPath"], "mountPath"));
        if path.extension().is_some_and(|e| e == "toml") {
            assert_eq!(path.to_str(), Some(image.config_path.as_str()));
        }
    }
}

#[test]
fn kubernetes_runs_linkpush_restricted_and_bounded() {
    let image = Image::load();
    let deployment = kube("Deployment");
    let pod = pod_spec(&deployment);
    let linkpush = container(pod, "linkpush");
    let sc = &linkpush["securityContext"];

    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        sc["runAsUser"].as_i64(),
        Some(image.uid),
        "the image's USER"
    );
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    for c in list(&pod["containers"], "containers") {
        let name = str_of(&c["name"], "name");
        let sc = &c["securityContext"];
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        let drop: Vec<&str> = list(&sc["capabilities"]["drop"], "drop")
            .iter()
            .map(|d| str_of(d, "capability"))
            .collect();
        assert_eq!(drop, ["ALL"], "{name}");
        for (kind, resource) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "memory"),
        ] {
            assert!(
                c["resources"][kind][resource].as_str().is_some(),
                "{name}: resources.{kind}.{resource}"
            );
        }
    }
}

#[test]
fn kubernetes_waits_longer_than_linkpush_drains() {
    let image = Image::load();
    let deployment = kube("Deployment");

    let grace = pod_spec(&deployment)["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");

    let grace = Duration::from_secs(grace.try_into().expect("positive"));
    // SIGTERM first keeps accepting for shutdown_delay, then drains for up to shutdown_timeout.
    let delay = list(&container(pod_spec(&deployment), "linkpush")["env"], "env")
        .iter()
        .find(|e| str_of(&e["name"], "name") == "LINKPUSH_SERVER_SHUTDOWN_DELAY")
        .map_or(image.config.server.shutdown_delay, |e| {
            linkpush::config::parse_duration(str_of(&e["value"], "value")).expect("a duration")
        });
    assert!(delay > Duration::ZERO, "a rollout needs a shutdown delay");
    assert!(
        grace > delay + image.config.server.shutdown_timeout,
        "{grace:?} vs {delay:?} + drain"
    );
}

#[test]
fn kubernetes_environment_is_valid_and_points_at_the_pod() {
    let image = Image::load();
    let deployment = kube("Deployment");
    let pod = pod_spec(&deployment);
    let linkpush = container(pod, "linkpush");

    let env: HashMap<String, String> = list(&linkpush["env"], "env")
        .iter()
        .map(|e| {
            (
                str_of(&e["name"], "name").to_owned(),
                str_of(&e["value"], "value").to_owned(),
            )
        })
        .collect();
    image.check_env(&env, KUBE);

    // The app shares the pod's network namespace: the upstream is on loopback, at a port the app
    // container declares.
    let upstream = env
        .get("LINKPUSH_UPSTREAM_URL")
        .expect("LINKPUSH_UPSTREAM_URL");
    assert_eq!(url_host(upstream), "127.0.0.1");
    let port: i64 = upstream
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let app_ports: Vec<i64> = list(&pod["containers"], "containers")
        .iter()
        .filter(|c| c["name"].as_str() != Some("linkpush"))
        .flat_map(|c| c["ports"].as_vec().cloned().unwrap_or_default())
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    assert!(
        app_ports.contains(&port),
        "{upstream} vs the app's ports {app_ports:?}"
    );
}
