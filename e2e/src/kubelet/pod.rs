//! One pod on this kubelet: its containers as processes on the pod's address, their
//! probes and restarts, the pod's status as the API should show it, and its end —
//! SIGTERM, the grace period, SIGKILL, then removal from the API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, watch};

use super::probe::{self, Settings};
use super::{runtime, volume};
use crate::controllers::wake_on_changes;

/// First wait before restarting a crashed container; it doubles per crash up to
/// [`BACKOFF_MAX`]. The real kubelet uses 10 s and 5 min; a local cluster is for trying
/// things, so it comes back sooner.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait before a restart.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A container that ran this long without crashing starts its back-off afresh.
pub const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// How a pod is to end.
#[derive(Debug, Clone, Copy)]
pub struct StopKind {
    /// SIGTERM, then SIGKILL after this.
    pub grace: Duration,
    /// Whether to remove the pod from the API afterwards (a deletion), or leave it (the
    /// kubelet itself is stopping).
    pub delete: bool,
}

/// What every pod worker shares.
#[allow(missing_debug_implementations)] // kube::Client has no Debug
pub struct Shared {
    /// Wakes the kubelet's sync loop (a pod worker ending lets a successor start).
    pub wake: Arc<Notify>,
    /// The API, as the kubelet.
    pub client: Client,
    /// Where image programs are (see [`runtime::IMAGE_TABLE`]).
    pub bin_dir: PathBuf,
    /// Per-pod folders (logs, kubeconfig) go under here.
    pub state_dir: PathBuf,
    /// The kubelet's own kubeconfig: pods get its server with their service account's
    /// token where the API issues one (TokenRequest), else its credentials.
    pub kubeconfig: PathBuf,
}

#[derive(Debug, Clone)]
struct ContainerStatus {
    name: String,
    image: String,
    ready: bool,
    started: bool,
    restart_count: i32,
    state: Value,
    last_state: Value,
}

struct PodState {
    containers: Vec<ContainerStatus>,
    start_time: String,
    terminating: bool,
}

/// Shared pod state plus a wake-up for the status writer.
struct Tracker {
    state: Mutex<PodState>,
    changed: Notify,
}

impl Tracker {
    fn update(&self, index: usize, f: impl FnOnce(&mut ContainerStatus)) {
        f(&mut self.state.lock().containers[index]);
        self.changed.notify_one();
    }
}

/// The folder of a pod's logs and files.
pub fn pod_dir(state_dir: &std::path::Path, pod: &Pod) -> PathBuf {
    state_dir.join("pods").join(format!(
        "{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any()
    ))
}

/// Runs `pod` on `ip` until `stop` says how to end it.
pub async fn run(
    shared: Arc<Shared>,
    pod: Pod,
    ip: String,
    mut stop: watch::Receiver<Option<StopKind>>,
) {
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let dir = pod_dir(&shared.state_dir, &pod);
    // A predecessor of the same name left its volumes: this pod writes its own.
    let _ = std::fs::remove_dir_all(dir.join("volumes"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(pod = %name, error = %e, "creating the pod folder");
    }
    let kubeconfig = pod_kubeconfig(&shared, &pod, &dir).await;
    let spec = pod.spec.clone().unwrap_or_default();
    let tracker = Arc::new(Tracker {
        state: Mutex::new(PodState {
            containers: spec
                .containers
                .iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    ready: false,
                    started: false,
                    restart_count: 0,
                    state: json!({"waiting": {"reason": "ContainerCreating"}}),
                    last_state: json!({}),
                })
                .collect(),
            start_time: crate::apiserver::meta::now_time(),
            terminating: false,
        }),
        changed: Notify::new(),
    });
    tracing::info!(pod = %format!("{ns}/{name}"), %ip, "starting pod");

    // The status writer: on every change, and again every RESYNC (so a write that
    // failed on a busy API server is made good, as the kubelet's status manager does).
    let (stop_writer, mut writer_stopped) = watch::channel(false);
    let writer = {
        let (api, tracker, name, ip, uid) = (
            api.clone(),
            tracker.clone(),
            name.clone(),
            ip.clone(),
            uid.clone(),
        );
        tokio::spawn(async move {
            loop {
                write_status(&api, &name, &uid, &ip, &tracker, None).await;
                tokio::select! {
                    _ = tracker.changed.notified() => {}
                    _ = tokio::time::sleep(crate::controllers::RESYNC) => {}
                    _ = writer_stopped.changed() => return,
                }
            }
        })
    };
    // Volumes first: a pod whose Secret is missing waits in ContainerCreating, as on a
    // real node; then they are kept in step with their Secrets and ConfigMaps.
    let volumes_changed = Arc::new(Notify::new());
    let volume_watches = if volume::has_api_sources(&pod) {
        vec![
            wake_on_changes(
                Api::<Secret>::namespaced(shared.client.clone(), &ns),
                volumes_changed.clone(),
            ),
            wake_on_changes(
                Api::<ConfigMap>::namespaced(shared.client.clone(), &ns),
                volumes_changed.clone(),
            ),
        ]
    } else {
        Vec::new()
    };
    let volumes = set_up_volumes(&shared, &pod, &dir, &tracker, &volumes_changed, &mut stop).await;
    let volume_sync = volumes.is_some().then(|| {
        tokio::spawn(keep_volumes(
            shared.clone(),
            pod.clone(),
            dir.clone(),
            volumes_changed.clone(),
        ))
    });
    let mut containers = Vec::new();
    for (index, container) in spec.containers.iter().enumerate() {
        let Some(volumes) = &volumes else { break };
        let runner = Runner {
            shared: shared.clone(),
            pod: pod.clone(),
            container: container.clone(),
            index,
            ip: ip.clone(),
            dir: dir.clone(),
            kubeconfig: kubeconfig.clone(),
            mounts: volume::mounts(container, volumes),
            tracker: tracker.clone(),
            restart_policy: spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
        };
        containers.push(tokio::spawn(runner.run(stop.clone())));
    }
    let mut kind = None;
    let all_done = futures::future::join_all(containers);
    tokio::pin!(all_done);
    loop {
        tokio::select! {
            _ = &mut all_done => break,
            changed = stop.changed() => {
                if changed.is_err() { break; }
                kind = *stop.borrow();
                tracker.state.lock().terminating = kind.is_some();
                tracker.changed.notify_one();
            }
        }
    }
    for watch in volume_watches {
        watch.abort();
    }
    if let Some(sync) = volume_sync {
        sync.abort();
    }
    // Stop the writer and wait for it, so no write of it lands after the last one.
    let _ = stop_writer.send(true);
    let _ = writer.await;
    let kind = kind.or(*stop.borrow());
    // A pod stopped because the kubelet stops keeps its phase (the real kubelet's node
    // just goes away); one that was deleted, or whose containers ended, gets its final
    // phase.
    if kind.is_none_or(|k| k.delete) {
        let phase = final_phase(&tracker);
        write_status(&api, &name, &uid, &ip, &tracker, Some(phase)).await;
    }
    // Torn down with the pod's processes, as the kubelet cleans up the volumes of a pod
    // that is gone: no Secret stays on disk after its pod (a pod that runs again, after
    // a kubelet restart, writes them afresh).
    let _ = std::fs::remove_dir_all(dir.join("volumes"));
    if kind.is_some_and(|k| k.delete) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "pod stopped and removed"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %name, error = %e, "removing the stopped pod"),
        }
    }
}

/// Sets the pod's volumes up, retrying (with the containers waiting in
/// ContainerCreating and the reason in their message) until that works, or `None` if
/// the pod is stopped first.
async fn set_up_volumes(
    shared: &Shared,
    pod: &Pod,
    dir: &std::path::Path,
    tracker: &Tracker,
    changed: &Notify,
    stop: &mut watch::Receiver<Option<StopKind>>,
) -> Option<volume::Volumes> {
    let mut last = String::new();
    loop {
        if stop.borrow().is_some() {
            return None;
        }
        match volume::set_up(&shared.client, pod, dir).await {
            Ok(volumes) => return Some(volumes),
            Err(message) if message == last => {}
            Err(message) => {
                tracing::warn!(pod = %pod.name_any(), %message, "waiting for the pod's volumes");
                last = message.clone();
                let mut state = tracker.state.lock();
                for c in &mut state.containers {
                    c.state =
                        json!({"waiting": {"reason": "ContainerCreating", "message": message}});
                }
                drop(state);
                tracker.changed.notify_one();
            }
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(crate::controllers::RESYNC) => {}
            changed = stop.changed() => if changed.is_err() { return None },
        }
    }
}

/// Brings the pod's volumes up to date on every change of a Secret or ConfigMap in its
/// namespace, and every RESYNC; a failure keeps the files as they were.
async fn keep_volumes(shared: Arc<Shared>, pod: Pod, dir: PathBuf, changed: Arc<Notify>) {
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(crate::controllers::RESYNC) => {}
        }
        if let Err(message) = volume::set_up(&shared.client, &pod, &dir).await {
            tracing::warn!(pod = %pod.name_any(), %message, "volume update failed (keeping the last files)");
        }
    }
}

fn final_phase(tracker: &Tracker) -> &'static str {
    let state = tracker.state.lock();
    let all_zero = state.containers.iter().all(|c| {
        c.state
            .pointer("/terminated/exitCode")
            .and_then(Value::as_i64)
            == Some(0)
    });
    if all_zero { "Succeeded" } else { "Failed" }
}

async fn write_status(
    api: &Api<Pod>,
    name: &str,
    uid: &str,
    ip: &str,
    tracker: &Tracker,
    final_phase: Option<&str>,
) {
    let status = {
        let state = tracker.state.lock();
        let all_ready = state.containers.iter().all(|c| c.ready);
        let any_running = state
            .containers
            .iter()
            .any(|c| c.state.get("running").is_some());
        let now = crate::apiserver::meta::now_time();
        let condition = |type_: &str, ok: bool| json!({"type": type_, "status": if ok {"True"} else {"False"}, "lastProbeTime": null, "lastTransitionTime": now});
        let phase = final_phase.unwrap_or(if any_running || state.terminating {
            "Running"
        } else {
            "Pending"
        });
        json!({
            "phase": phase,
            "podIP": ip, "podIPs": [{"ip": ip}],
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": state.start_time,
            "conditions": [
                condition("PodReadyToStartContainers", true),
                condition("Initialized", true),
                condition("Ready", all_ready && final_phase.is_none()),
                condition("ContainersReady", all_ready && final_phase.is_none()),
                condition("PodScheduled", true),
            ],
            "containerStatuses": state.containers.iter().map(|c| json!({
                "name": c.name, "image": c.image, "imageID": "", "containerID": format!("process://{name}/{}", c.name),
                "ready": c.ready && final_phase.is_none(), "started": c.started, "restartCount": c.restart_count,
                "state": c.state, "lastState": c.last_state,
            })).collect::<Vec<_>>(),
        })
    };
    // The uid makes the write conditional on this incarnation of the pod: a successor
    // with the same name (a StatefulSet's) must never get this one's status.
    let patch = Patch::Merge(json!({"metadata": {"uid": uid}, "status": status}));
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &patch)
        .await
    {
        tracing::debug!(pod = %name, error = %e, "pod status update failed (retried at the next resync)");
    }
}

/// The kubeconfig the pod's processes get (`KUBECONFIG`): the kubelet's server, with a
/// token of the pod's service account when the API issues one, so RBAC applies to the
/// pod as in a real cluster; the kubelet's own file otherwise (the emulator has no
/// authentication).
async fn pod_kubeconfig(shared: &Shared, pod: &Pod, dir: &std::path::Path) -> PathBuf {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;

    let ns = pod.namespace().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(24 * 3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(shared.client.clone(), &ns)
        .create_token_request(&account, &Default::default(), &request)
        .await
        .ok()
        .and_then(|t| t.status.map(|s| s.token));
    let Some(token) = token else {
        return shared.kubeconfig.clone();
    };
    let written = std::fs::read_to_string(&shared.kubeconfig)
        .ok()
        .and_then(|text| serde_yaml::from_str::<serde_yaml::Value>(&text).ok())
        .and_then(|mut config| {
            for user in config.get_mut("users")?.as_sequence_mut()? {
                let mut creds = serde_yaml::Mapping::new();
                creds.insert("token".into(), token.clone().into());
                user["user"] = creds.into();
            }
            let path = dir.join("kubeconfig");
            std::fs::write(&path, serde_yaml::to_string(&config).ok()?).ok()?;
            Some(path)
        });
    written.unwrap_or_else(|| shared.kubeconfig.clone())
}

/// One container's life: start, probe, restart with back-off, stop.
struct Runner {
    shared: Arc<Shared>,
    pod: Pod,
    container: Container,
    index: usize,
    ip: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    /// Mount path → the folder standing for it (see [`volume`]).
    mounts: Vec<(String, PathBuf)>,
    tracker: Arc<Tracker>,
    restart_policy: String,
}

/// What the probes tell the runner.
#[derive(Debug)]
enum ProbeEvent {
    Started,
    Ready(bool),
    Unhealthy(String),
}

enum Ended {
    Exited(std::process::ExitStatus),
    Killed(String, Option<std::process::ExitStatus>),
    Stopped(Option<std::process::ExitStatus>),
}

impl Runner {
    async fn run(self, mut stop: watch::Receiver<Option<StopKind>>) {
        let mut backoff = BACKOFF_INITIAL;
        loop {
            if stop.borrow().is_some() {
                return;
            }
            let started = Instant::now();
            let ended = match self.start().await {
                Ok(child) => self.supervise(child, &mut stop).await,
                Err((reason, message)) => {
                    tracing::warn!(pod = %self.pod.name_any(), container = %self.container.name, %reason, %message, "container cannot start");
                    self.tracker.update(self.index, |c| {
                        c.ready = false;
                        c.state = json!({"waiting": {"reason": reason, "message": message}});
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let finished = crate::apiserver::meta::now_time();
            let started_at = self.tracker.state.lock().containers[self.index]
                .state
                .pointer("/running/startedAt")
                .cloned()
                .unwrap_or(Value::Null);
            let (status, reason, message) = match &ended {
                Ended::Exited(s) => (Some(*s), None, None),
                Ended::Killed(why, s) => (*s, Some("Error"), Some(why.clone())),
                Ended::Stopped(s) => (*s, None, None),
            };
            let code = status.and_then(|s| s.code()).unwrap_or(137);
            let signal = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
            let reason = reason.unwrap_or(if code == 0 && signal.is_none() {
                "Completed"
            } else {
                "Error"
            });
            let terminated = json!({"terminated": {
                "exitCode": if signal.is_some() { 128 + signal.unwrap_or(0) } else { code },
                "signal": signal, "reason": reason, "message": message,
                "startedAt": started_at, "finishedAt": finished,
                "containerID": format!("process://{}/{}", self.pod.name_any(), self.container.name)}});
            tracing::info!(pod = %self.pod.name_any(), container = %self.container.name, ?status, "container ended");
            let restart = match ended {
                Ended::Stopped(_) => false,
                Ended::Killed(..) => self.restart_policy != "Never",
                Ended::Exited(s) => match self.restart_policy.as_str() {
                    "Never" => false,
                    "OnFailure" => !s.success(),
                    _ => true,
                },
            };
            if !restart {
                self.tracker.update(self.index, |c| {
                    c.ready = false;
                    c.state = terminated;
                });
                return;
            }
            if started.elapsed() >= BACKOFF_RESET {
                backoff = BACKOFF_INITIAL;
            }
            self.tracker.update(self.index, |c| {
                c.ready = false;
                c.started = false;
                c.last_state = terminated;
                c.restart_count += 1;
                c.state = json!({"waiting": {"reason": "CrashLoopBackOff",
                    "message": format!("back-off {}s restarting failed container={} pod={}", backoff.as_secs(), self.container.name, self.pod.name_any())}});
            });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Resolves the program and environment and starts the process.
    async fn start(&self) -> Result<tokio::process::Child, (&'static str, String)> {
        let mut env =
            runtime::environment(&self.shared.client, &self.pod, &self.container, &self.ip)
                .await
                .map_err(|e| ("CreateContainerConfigError", e))?;
        for value in env.values_mut() {
            *value = volume::rewrite(&runtime::pod_network(value, &self.ip), &self.mounts);
        }
        let mut base = BTreeMap::from([
            (
                "PATH".to_string(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            ),
            ("HOSTNAME".to_string(), self.pod.name_any()),
            ("HOME".to_string(), self.dir.display().to_string()),
            (
                "KUBECONFIG".to_string(),
                self.kubeconfig.display().to_string(),
            ),
        ]);
        base.append(&mut env);
        let env = base;
        let (program, args) = runtime::program(&self.container, &self.shared.bin_dir, &env)
            .map_err(|e| ("ErrImageNeverPull", e))?;
        let program = PathBuf::from(volume::rewrite(&program.to_string_lossy(), &self.mounts));
        let args: Vec<String> = args
            .iter()
            .map(|a| volume::rewrite(&runtime::pod_network(a, &self.ip), &self.mounts))
            .collect();
        let log_path = self.dir.join(format!("{}.log", self.container.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| {
                (
                    "RunContainerError",
                    format!("log file {}: {e}", log_path.display()),
                )
            })?;
        let log_err = log
            .try_clone()
            .map_err(|e| ("RunContainerError", e.to_string()))?;
        let child = tokio::process::Command::new(&program)
            .args(&args)
            .env_clear()
            .envs(&env)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // Its own process group: a Ctrl-C at the terminal reaches kcache-local, which
            // stops pods in order, not every pod at once.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                (
                    "RunContainerError",
                    format!("starting {}: {e}", program.display()),
                )
            })?;
        // `<container>.pid` is how a person (or a fault test) finds the process, as
        // `crictl inspect` would tell on a real node.
        if let Some(pid) = child.id() {
            let _ = std::fs::write(
                self.dir.join(format!("{}.pid", self.container.name)),
                pid.to_string(),
            );
        }
        tracing::info!(pod = %self.pod.name_any(), container = %self.container.name, program = %program.display(), ?args, "container started");
        self.tracker.update(self.index, |c| {
            c.state = json!({"running": {"startedAt": crate::apiserver::meta::now_time()}});
        });
        Ok(child)
    }

    /// Probes the running process until it exits, fails its liveness, or is stopped.
    async fn supervise(
        &self,
        mut child: tokio::process::Child,
        stop: &mut watch::Receiver<Option<StopKind>>,
    ) -> Ended {
        let (tx, mut events) = mpsc::channel(8);
        let probes = tokio::spawn(probe_loop(self.container.clone(), self.ip.clone(), tx));
        let ended = loop {
            tokio::select! {
                status = child.wait() => break Ended::Exited(status.unwrap_or_else(|_| exit_status(1))),
                Some(event) = events.recv() => match event {
                    ProbeEvent::Started => self.tracker.update(self.index, |c| c.started = true),
                    ProbeEvent::Ready(ready) => self.tracker.update(self.index, |c| c.ready = ready),
                    ProbeEvent::Unhealthy(why) => {
                        tracing::warn!(pod = %self.pod.name_any(), container = %self.container.name, %why, "liveness failed; restarting");
                        let grace = pod_grace(&self.pod);
                        let status = terminate(&mut child, grace).await;
                        break Ended::Killed(why, status);
                    }
                },
                _ = stop.changed() => {
                    // Readiness is still probed while the process shuts down (the real
                    // kubelet does so too: EndpointSlices' `serving` relies on it).
                    let grace = stop.borrow().map(|k| k.grace).unwrap_or_default();
                    let terminated = terminate(&mut child, grace);
                    tokio::pin!(terminated);
                    let status = loop {
                        tokio::select! {
                            status = &mut terminated => break status,
                            Some(event) = events.recv() => {
                                if let ProbeEvent::Ready(ready) = event {
                                    self.tracker.update(self.index, |c| c.ready = ready);
                                }
                            }
                        }
                    };
                    break Ended::Stopped(status);
                }
            }
        };
        probes.abort();
        ended
    }
}

fn exit_status(code: i32) -> std::process::ExitStatus {
    std::os::unix::process::ExitStatusExt::from_raw(code << 8)
}

/// The pod's `terminationGracePeriodSeconds` (default 30 s).
pub fn pod_grace(pod: &Pod) -> Duration {
    let secs = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// SIGTERM, up to `grace` for the process to exit, then SIGKILL.
async fn terminate(
    child: &mut tokio::process::Child,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    // The whole process group the container was started in (its pid is the group's
    // id), so a shell's children hear it too.
    let group = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw);
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            if let Some(group) = group {
                let _ = killpg(group, Signal::SIGKILL);
            }
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    }
}

/// Startup probe first; then readiness and liveness side by side.
async fn probe_loop(container: Container, ip: String, tx: mpsc::Sender<ProbeEvent>) {
    if let Some(startup) = &container.startup_probe
        && let Err(why) = until_passes(startup, &container, &ip).await
    {
        let _ = tx
            .send(ProbeEvent::Unhealthy(format!(
                "Startup probe failed: {why}"
            )))
            .await;
        return;
    }
    let _ = tx.send(ProbeEvent::Started).await;
    let readiness = async {
        let Some(probe) = &container.readiness_probe else {
            let _ = tx.send(ProbeEvent::Ready(true)).await;
            return;
        };
        let settings = Settings::of(probe);
        tokio::time::sleep(settings.initial_delay).await;
        let (mut ready, mut successes, mut failures) = (false, 0, 0);
        loop {
            match probe::check(probe, &container, &ip).await {
                Ok(()) => {
                    successes += 1;
                    failures = 0;
                    if !ready && successes >= settings.success_threshold {
                        ready = true;
                        let _ = tx.send(ProbeEvent::Ready(true)).await;
                    }
                }
                Err(why) => {
                    failures += 1;
                    successes = 0;
                    tracing::debug!(%ip, container = %container.name, %why, "readiness probe failed");
                    if ready && failures >= settings.failure_threshold {
                        ready = false;
                        let _ = tx.send(ProbeEvent::Ready(false)).await;
                    }
                }
            }
            tokio::time::sleep(settings.period).await;
        }
    };
    let liveness = async {
        let Some(probe) = &container.liveness_probe else {
            return;
        };
        let settings = Settings::of(probe);
        tokio::time::sleep(settings.initial_delay).await;
        let mut failures = 0;
        loop {
            match probe::check(probe, &container, &ip).await {
                Ok(()) => failures = 0,
                Err(why) => {
                    failures += 1;
                    if failures >= settings.failure_threshold {
                        let _ = tx
                            .send(ProbeEvent::Unhealthy(format!(
                                "Liveness probe failed: {why}"
                            )))
                            .await;
                        return;
                    }
                }
            }
            tokio::time::sleep(settings.period).await;
        }
    };
    tokio::join!(readiness, liveness);
}

/// Runs a startup probe until it passes, or fails `failureThreshold` times in a row.
async fn until_passes(
    probe: &k8s_openapi::api::core::v1::Probe,
    container: &Container,
    ip: &str,
) -> Result<(), String> {
    let settings = Settings::of(probe);
    tokio::time::sleep(settings.initial_delay).await;
    let mut failures = 0;
    loop {
        match probe::check(probe, container, ip).await {
            Ok(()) => return Ok(()),
            Err(why) => {
                failures += 1;
                if failures >= settings.failure_threshold {
                    return Err(why);
                }
            }
        }
        tokio::time::sleep(settings.period).await;
    }
}
