//! kubectl from the machine image against the emulator: apply, get (with printer
//! columns), get -w, scale, patch, delete; and `kcache-local up` as a person runs it.
//! Skipped, with a notice, where kubectl is not installed.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::{TestServer, WIDGET_CRD, configmap};

/// kubectl, if the machine has it.
fn kubectl_binary() -> Option<PathBuf> {
    let from_env = std::env::var_os("KUBECTL").map(PathBuf::from);
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubectl"))
            .find(|p| p.is_file())
    });
    from_env.or(on_path)
}

/// kubectl pointed at one emulator, with its own discovery cache.
struct Kubectl {
    binary: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(server_url: &str) -> Option<Self> {
        let Some(binary) = kubectl_binary() else {
            eprintln!("NOTICE: kubectl not found on PATH; skipping this kubectl test");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        kcache_e2e::local::kubeconfig::write(&dir.path().join("kubeconfig"), server_url).unwrap();
        Some(Self { binary, dir })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .kill_on_drop(true);
        command
    }

    async fn try_run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(Duration::from_secs(20), self.command(args).output())
            .await
            .expect("kubectl finishes")
            .unwrap()
    }

    /// Runs kubectl, asserts success, returns stdout.
    async fn run(&self, args: &[&str]) -> String {
        let output = self.try_run(args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "kubectl {args:?} failed: {stderr}");
        assert!(
            !stderr.to_lowercase().contains("warning"),
            "kubectl {args:?} warned: {stderr}"
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn file(&self, name: &str, content: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    }
}

const WIDGET: &str = "apiVersion: test.kcache.io/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  image: kcache:1\n  replicas: 2\n";

#[tokio::test]
async fn kubectl_applies_gets_scales_patches_and_deletes_a_custom_resource() {
    let server = TestServer::start().await;
    let Some(kubectl) = Kubectl::new(&server.url()) else {
        return;
    };
    let crd = kubectl.file("crd.yaml", WIDGET_CRD);
    assert!(
        kubectl.run(&["apply", "-f", &crd]).await.contains(
            "customresourcedefinition.apiextensions.k8s.io/widgets.test.kcache.io created"
        )
    );
    let widget = kubectl.file("widget.yaml", WIDGET);
    assert!(
        kubectl
            .run(&["apply", "-f", &widget])
            .await
            .contains("widget.test.kcache.io/w created")
    );

    let table = kubectl.run(&["get", "widgets"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, vec!["NAME", "REPLICAS", "PHASE", "AGE"], "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], &["w", "2"], "{table}");
    assert!(
        kubectl
            .run(&["get", "wd", "w", "-o", "name"])
            .await
            .contains("widget.test.kcache.io/w"),
        "short names resolve"
    );

    let changed = kubectl.file(
        "widget2.yaml",
        &WIDGET.replace("replicas: 2", "replicas: 3"),
    );
    assert!(
        kubectl
            .run(&["apply", "-f", &changed])
            .await
            .contains("configured")
    );
    assert_eq!(
        kubectl
            .run(&["get", "widget", "w", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "3"
    );

    assert!(
        kubectl
            .run(&["scale", "widget/w", "--replicas=5"])
            .await
            .contains("scaled")
    );
    assert_eq!(
        kubectl
            .run(&["get", "widget", "w", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "5"
    );

    assert!(
        kubectl
            .run(&[
                "patch",
                "widget",
                "w",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"policy":"lfu"}}"#
            ])
            .await
            .contains("patched")
    );
    let json_patch = r#"[{"op":"replace","path":"/spec/image","value":"kcache:2"}]"#;
    assert!(
        kubectl
            .run(&["patch", "widget", "w", "--type", "json", "-p", json_patch])
            .await
            .contains("patched")
    );
    assert_eq!(
        kubectl
            .run(&[
                "get",
                "widget",
                "w",
                "-o",
                "jsonpath={.spec.policy} {.spec.image}"
            ])
            .await,
        "lfu kcache:2"
    );

    let invalid = kubectl
        .try_run(&[
            "patch",
            "widget",
            "w",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":50}}"#,
        ])
        .await;
    assert!(!invalid.status.success());
    assert!(
        String::from_utf8_lossy(&invalid.stderr).contains("is invalid"),
        "{}",
        String::from_utf8_lossy(&invalid.stderr)
    );

    assert!(
        kubectl
            .run(&["delete", "widget", "w"])
            .await
            .contains("deleted")
    );
    let gone = kubectl.try_run(&["get", "widget", "w"]).await;
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
    server.stop().await;
}

#[tokio::test]
async fn kubectl_applies_and_patches_builtin_kinds_client_and_server_side() {
    let server = TestServer::start().await;
    let Some(kubectl) = Kubectl::new(&server.url()) else {
        return;
    };
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels:\n    app: kcache\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    let file = kubectl.file("cm.yaml", manifest);
    assert!(
        kubectl
            .run(&["apply", "-f", &file])
            .await
            .contains("configmap/settings created")
    );
    // The second apply drops `b`: kubectl computes a three-way strategic merge patch.
    let file = kubectl.file("cm2.yaml", &manifest.replace("  b: \"2\"\n", ""));
    assert!(
        kubectl
            .run(&["apply", "-f", &file])
            .await
            .contains("configured")
    );
    assert_eq!(
        kubectl
            .run(&["get", "cm", "settings", "-o", "jsonpath={.data}"])
            .await,
        r#"{"a":"1"}"#
    );
    assert!(
        kubectl
            .run(&[
                "patch",
                "configmap",
                "settings",
                "-p",
                r#"{"data":{"c":"3"}}"#
            ])
            .await
            .contains("patched")
    );
    let listed = kubectl
        .run(&["get", "configmaps", "-l", "app=kcache"])
        .await;
    assert!(
        listed.lines().any(|l| l.starts_with("settings")),
        "{listed}"
    );

    let server_side =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  x: \"1\"\n";
    let file = kubectl.file("ssa.yaml", server_side);
    assert!(
        kubectl
            .run(&["apply", "--server-side", "-f", &file])
            .await
            .contains("serverside-applied")
    );
    let conflicting = kubectl.file("ssa2.yaml", &server_side.replace("\"1\"", "\"2\""));
    let conflict = kubectl
        .try_run(&[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "-f",
            &conflicting,
        ])
        .await;
    assert!(!conflict.status.success());
    assert!(
        String::from_utf8_lossy(&conflict.stderr).contains("conflict"),
        "{}",
        String::from_utf8_lossy(&conflict.stderr)
    );
    assert!(
        kubectl
            .run(&[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager",
                "other",
                "-f",
                &conflicting
            ])
            .await
            .contains("serverside-applied")
    );
    assert!(
        kubectl
            .run(&["delete", "configmap", "settings", "ssa"])
            .await
            .contains("deleted")
    );
    server.stop().await;
}

#[tokio::test]
async fn kubectl_get_watch_prints_rows_as_objects_change() {
    let server = TestServer::start().await;
    let Some(kubectl) = Kubectl::new(&server.url()) else {
        return;
    };
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(configmap("first", json!({}))).unwrap(),
    )
    .await
    .unwrap();
    let mut child = kubectl
        .command(&["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line within 10s")
            .unwrap()
            .unwrap()
    };
    assert!(next_line().await.starts_with("NAME"));
    assert!(next_line().await.starts_with("first"));
    api.create(
        &PostParams::default(),
        &serde_json::from_value(configmap("second", json!({}))).unwrap(),
    )
    .await
    .unwrap();
    assert!(next_line().await.starts_with("second"));
    api.patch(
        "first",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    assert!(next_line().await.starts_with("first"));
    child.kill().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn kcache_local_up_serves_kubectl_until_terminated() {
    let Some(binary) = kubectl_binary() else {
        eprintln!("NOTICE: kubectl not found on PATH; skipping this kubectl test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut up = Command::new(env!("CARGO_BIN_EXE_kcache-local"))
        .args(["up", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    crate::support::eventually("the kubeconfig is written", || async {
        kubeconfig.exists()
    })
    .await;
    let output = Command::new(&binary)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "--cache-dir",
            &dir.path().join("cache").display().to_string(),
            "get",
            "namespaces",
            "-o",
            "name",
        ])
        .env("HOME", dir.path())
        .output()
        .await
        .unwrap();
    let names = String::from_utf8_lossy(&output.stdout);
    assert!(
        names.contains("namespace/default") && names.contains("namespace/kube-system"),
        "{names} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // `up` runs the operator too: a CacheCluster applied with kubectl becomes a
    // StatefulSet of cache nodes.
    let run = |args: &[&str]| {
        let mut command = Command::new(&binary);
        command
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args)
            .env("HOME", dir.path());
        async move { command.output().await.unwrap() }
    };
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/cachecluster-minimal.yaml"
    );
    let applied = run(&["apply", "-f", example]).await;
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    crate::support::eventually("the operator creates the StatefulSet", || async {
        let got = run(&["get", "statefulset", "demo", "-o", "name"]).await;
        String::from_utf8_lossy(&got.stdout).contains("statefulset.apps/demo")
    })
    .await;
    terminate(up.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(5), up.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Sends SIGTERM to a process this test started.
fn terminate(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
