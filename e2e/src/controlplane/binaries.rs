//! Where the control plane's binaries are: the directory `e2e/controlplane/build.sh`
//! printed, passed in `KCACHE_CONTROLPLANE_BIN` (scripts/test.sh sets it), or else built
//! now by running build.sh (minutes on a cold Go cache, a few milliseconds warm).

use std::path::{Path, PathBuf};

use super::Error;

/// The variable naming the bin dir build.sh printed.
pub const BIN_ENV: &str = "KCACHE_CONTROLPLANE_BIN";

/// The binaries a bin dir must hold.
pub const BINARIES: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
];

/// The build script of this checkout.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/build.sh")
}

/// The bin dir from [`BIN_ENV`], or from running [`build_script`] when it is unset.
/// Missing binaries are an error, never a reason to skip.
pub async fn locate() -> Result<PathBuf, Error> {
    let dir = match std::env::var_os(BIN_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => build().await?,
    };
    check(&dir)?;
    Ok(dir)
}

/// Checks that `dir` holds every one of [`BINARIES`].
pub fn check(dir: &Path) -> Result<(), Error> {
    let missing: Vec<&str> = BINARIES
        .iter()
        .copied()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Binaries(format!(
            "{} lacks {}; run e2e/controlplane/build.sh and set {BIN_ENV} to the directory it prints",
            dir.display(),
            missing.join(", ")
        )))
    }
}

async fn build() -> Result<PathBuf, Error> {
    let script = build_script();
    tracing::info!(script = %script.display(), "{BIN_ENV} unset; building the control plane");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(|e| Error::Spawn {
            program: script.clone(),
            source: e,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().last() {
        Some(dir) if output.status.success() => Ok(PathBuf::from(dir.trim())),
        _ => Err(Error::Binaries(format!(
            "{} failed ({}); see its output above",
            script.display(),
            output.status
        ))),
    }
}
