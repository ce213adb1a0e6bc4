//! Probes as the kubelet runs them: gRPC health, HTTP GET, TCP connect and exec, against
//! the pod's address, with the probe's timeout, period and thresholds.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The probe settings with the API's defaults filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Wait before the first probe.
    pub initial_delay: Duration,
    /// Between probes.
    pub period: Duration,
    /// Per probe.
    pub timeout: Duration,
    /// Consecutive successes that make a failing probe pass.
    pub success_threshold: u32,
    /// Consecutive failures that make a passing probe fail.
    pub failure_threshold: u32,
}

impl Settings {
    /// Reads `probe`'s settings with Kubernetes' defaults (period 10 s, timeout 1 s,
    /// thresholds 1 and 3).
    pub fn of(probe: &Probe) -> Self {
        let secs = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        let count = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Self {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Runs `probe` once against `ip`; `Err` says why it failed.
pub async fn check(probe: &Probe, container: &Container, ip: &str) -> Result<(), String> {
    let timeout = Settings::of(probe).timeout;
    let attempt = async {
        if let Some(grpc) = &probe.grpc {
            let port = u16::try_from(grpc.port).map_err(|_| format!("bad port {}", grpc.port))?;
            return grpc_check(ip, port, grpc.service.clone().unwrap_or_default(), timeout).await;
        }
        if let Some(http) = &probe.http_get {
            let port = resolve_port(&http.port, container)?;
            let host = http.host.clone().unwrap_or_else(|| ip.to_string());
            return http_check(&host, port, http.path.as_deref().unwrap_or("/")).await;
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = resolve_port(&tcp.port, container)?;
            let host = tcp.host.clone().unwrap_or_else(|| ip.to_string());
            return TcpStream::connect((host.as_str(), port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"));
        }
        if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            let (program, args) = command
                .split_first()
                .ok_or_else(|| "exec probe without a command".to_string())?;
            let status = tokio::process::Command::new(program)
                .args(args)
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| format!("exec {program}: {e}"))?;
            return if status.success() {
                Ok(())
            } else {
                Err(format!("exec {program}: {status}"))
            };
        }
        Err("probe names no handler (grpc, httpGet, tcpSocket or exec)".to_string())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("timeout after {timeout:?}"))?
}

/// A probe port: a number or the name of one of the container's ports.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| format!("no container port named {name:?}"))?,
    };
    u16::try_from(number).map_err(|_| format!("bad port {number}"))
}

async fn grpc_check(ip: &str, port: u16, service: String, timeout: Duration) -> Result<(), String> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| format!("connect {ip}:{port}: {e}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.clone(),
        })
        .await
        .map_err(|e| format!("health check {service:?}: {}", e.message()))?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("service {service:?} is {}", other.as_str_name())),
    }
}

async fn http_check(host: &str, port: u16, path: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_the_api_defaults() {
        let s = Settings::of(&Probe::default());
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
    }

    #[tokio::test]
    async fn tcp_and_http_probes_tell_listening_from_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /readyz");
                let reply = if ok {
                    "HTTP/1.1 200 OK\r\n\r\n"
                } else {
                    "HTTP/1.1 503 Nope\r\n\r\n"
                };
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        let container = Container::default();
        let probe = |json: serde_json::Value| -> Probe { serde_json::from_value(json).unwrap() };
        let http = |path: &str| probe(serde_json::json!({"httpGet": {"path": path, "port": port}}));
        assert_eq!(
            check(&http("/readyz"), &container, "127.0.0.1").await,
            Ok(())
        );
        let err = check(&http("/other"), &container, "127.0.0.1")
            .await
            .unwrap_err();
        assert!(err.contains("503"), "{err}");
        let tcp = probe(serde_json::json!({"tcpSocket": {"port": port}}));
        assert_eq!(check(&tcp, &container, "127.0.0.1").await, Ok(()));
        let closed = probe(serde_json::json!({"tcpSocket": {"port": 1}}));
        assert!(check(&closed, &container, "127.0.0.1").await.is_err());
    }
}
