//! The real control plane fails loudly: missing binaries are an error naming them (never
//! a skipped test), and a process that dies during start-up fails `start` at once with
//! the error lines of its log, instead of a timeout minutes later.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use std::os::unix::fs::{PermissionsExt, symlink};
use std::time::{Duration, Instant};

use kcache_e2e::controlplane::{Error, Options, RealControlPlane, locate_binaries};

#[tokio::test]
async fn missing_binaries_are_an_error_that_names_them_and_the_build_script() {
    let empty = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let err = RealControlPlane::start(Options::new(state.path()).bin_dir(empty.path()))
        .await
        .unwrap_err();
    let Error::Binaries(message) = err else {
        panic!("expected Error::Binaries, got {err}");
    };
    assert!(
        message.contains("lacks etcd, kube-apiserver, kube-controller-manager, kubectl"),
        "{message}"
    );
    assert!(message.contains("e2e/controlplane/build.sh"), "{message}");
}

#[tokio::test]
async fn an_apiserver_that_dies_fails_start_with_its_fatal_log_line() {
    let real = locate_binaries().await.unwrap();
    let bin = tempfile::tempdir().unwrap();
    for name in ["etcd", "kube-controller-manager", "kubectl"] {
        symlink(real.join(name), bin.path().join(name)).unwrap();
    }
    // Dies the way kube-apiserver does: a klog fatal line, then shutdown noise.
    let fake = bin.path().join("kube-apiserver");
    std::fs::write(
        &fake,
        "#!/bin/sh\n\
         echo 'F1201 00:00:00.000000       1 server.go:1] refusing to serve: test' >&2\n\
         for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do echo \"I1201 noise $i\"; done\n\
         exit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    let state = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = RealControlPlane::start(Options::new(state.path()).bin_dir(bin.path()))
        .await
        .unwrap_err();
    let Error::Exited {
        name, status, tail, ..
    } = err
    else {
        panic!("expected Error::Exited, got {err}");
    };
    assert_eq!(name, "kube-apiserver");
    assert_eq!(status.code(), Some(3));
    assert!(tail.contains("refusing to serve: test"), "{tail}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "start took {:?} to notice",
        started.elapsed()
    );
}
