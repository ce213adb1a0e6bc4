//! Reloading credentials without a restart. Kubernetes updates a mounted Secret by
//! writing a new timestamped directory and swapping the `..data` symlink to it, which
//! inotify on the file paths would miss; reading the few small files every interval
//! and comparing their bytes catches that, an in-place write and a `kubectl cp` alike.
//!
//! A change that does not load (a certificate whose key has not arrived yet, a token
//! file emptied by mistake) keeps the previous credentials in use, logs why and counts
//! an error; the next change is tried again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use super::{DEFAULT_RELOAD_INTERVAL, Security, SecurityConfig, Tokens, tls};

/// The bytes of a set of files as last seen (`None`: unreadable).
#[derive(Debug, PartialEq, Eq, Default)]
struct Snapshot(Vec<Option<Vec<u8>>>);

impl Snapshot {
    fn read(paths: &[&Path]) -> Snapshot {
        Snapshot(paths.iter().map(|p| std::fs::read(p).ok()).collect())
    }
}

/// Watches the files of `config` until `stop` and applies their changes to `security`.
pub async fn run(config: SecurityConfig, security: Security, mut stop: watch::Receiver<bool>) {
    let tls_paths: Vec<PathBuf> = config
        .tls
        .iter()
        .flat_map(|f| {
            [
                Some(&f.cert),
                Some(&f.key),
                f.client_ca.as_ref(),
                f.peer_ca.as_ref(),
            ]
        })
        .flatten()
        .cloned()
        .collect();
    let token_paths: Vec<PathBuf> = [&config.token_file, &config.peer_token_file]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    if tls_paths.is_empty() && token_paths.is_empty() {
        return;
    }
    let tls_refs: Vec<&Path> = tls_paths.iter().map(PathBuf::as_path).collect();
    let token_refs: Vec<&Path> = token_paths.iter().map(PathBuf::as_path).collect();
    let mut tls_seen = Snapshot::read(&tls_refs);
    let mut token_seen = Snapshot::read(&token_refs);
    let interval = match config.reload_interval {
        Duration::ZERO => DEFAULT_RELOAD_INTERVAL,
        every => every,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = Snapshot::read(&tls_refs);
        if now != tls_seen {
            tls_seen = now;
            reload_tls(&config, &security);
        }
        let now = Snapshot::read(&token_refs);
        if now != token_seen {
            token_seen = now;
            reload_token(&config, &security);
        }
    }
}

fn reload_tls(config: &SecurityConfig, security: &Security) {
    let Some(files) = &config.tls else { return };
    let loaded = tls::server_config(files).and_then(|server| {
        let peer = match &security.peer_tls {
            Some(_) => Some(tls::peer_config(files)?),
            None => None,
        };
        Ok((server, peer))
    });
    match loaded {
        Ok((server, peer)) => {
            if let Some(tls) = &security.tls {
                tls.replace(server);
            }
            if let (Some(tls), Some(peer)) = (&security.peer_tls, peer) {
                tls.replace(peer);
            }
            security.metrics.reloaded("tls", true);
            tracing::info!(cert = %files.cert.display(), "reloaded the TLS certificate");
        }
        Err(e) => {
            security.metrics.reloaded("tls", false);
            tracing::error!(error = %e, "the changed TLS files do not load; keeping the previous certificate");
        }
    }
}

fn reload_token(config: &SecurityConfig, security: &Security) {
    let loaded = Tokens::read(config).and_then(|tokens| {
        let sent = [
            (&security.peer_token, &tokens.app),
            (&security.node_token, &tokens.peer),
        ];
        for (token, file) in sent {
            if let (Some(token), Some(file)) = (token, file) {
                token.replace(&file[0])?;
            }
        }
        Ok(tokens)
    });
    match loaded {
        Ok(tokens) => {
            let accepted = [
                (&security.auth, &tokens.app),
                (&security.peer_auth, &tokens.peer),
            ];
            for (auth, file) in accepted {
                if let (Some(auth), Some(file)) = (auth, file) {
                    auth.replace(file);
                }
            }
            security.metrics.reloaded("token", true);
            tracing::info!(
                tokens = tokens.app.as_ref().map_or(0, Vec::len),
                peer_tokens = tokens.peer.as_ref().map_or(0, Vec::len),
                "reloaded the accepted tokens"
            );
        }
        Err(e) => {
            security.metrics.reloaded("token", false);
            tracing::error!(error = %e, "a changed token file does not load; keeping the previous tokens");
        }
    }
}
