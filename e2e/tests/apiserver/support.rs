//! Test harness: an emulator on 127.0.0.1:0, a kube client for it, a raw HTTP client to
//! see exactly what goes over the wire, and fixtures.

use std::time::Duration;

use kcache_e2e::apiserver::{ApiServer, Cluster, Config};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running emulator.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    server: ApiServer,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Config {
            bookmark_interval: Duration::from_millis(200),
            ..Config::default()
        })
        .await
    }

    pub async fn start_with(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = ApiServer::new(config).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            server,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn cluster(&self) -> &Cluster {
        self.server.cluster()
    }

    /// An unmodified kube client pointed at the emulator.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Stops the server; open watches end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("shutdown is prompt")
                .unwrap()
                .unwrap();
        }
    }

    /// One raw HTTP/1.1 request; the whole response.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> RawResponse {
        let mut stream = self.send(method, path, content_type, body, &[]).await;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        RawResponse::parse(&bytes)
    }

    /// GET with an `Accept` header.
    pub async fn raw_accept(&self, path: &str, accept: &str) -> RawResponse {
        let mut stream = self.send("GET", path, "", "", &[("Accept", accept)]).await;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        RawResponse::parse(&bytes)
    }

    /// A watch request, read line by line.
    pub async fn watch(&self, path: &str) -> WatchStream {
        let stream = self.send("GET", path, "", "", &[]).await;
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).await.unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line.trim().is_empty() {
                break;
            }
            headers.push(line.trim().to_ascii_lowercase());
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        WatchStream {
            status,
            headers,
            reader,
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> TcpStream {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if !content_type.is_empty() {
            request.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).await.unwrap();
        stream
    }
}

/// A complete raw response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<String>,
    pub body: String,
}

impl RawResponse {
    fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes).to_string();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<String> = lines.map(|l| l.to_ascii_lowercase()).collect();
        let body = if headers.iter().any(|h| h == "transfer-encoding: chunked") {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, tail)) = rest.split_once("\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
}

/// A streaming watch response, chunked: `next_event` decodes chunks into JSON lines.
pub struct WatchStream {
    pub status: u16,
    pub headers: Vec<String>,
    reader: BufReader<TcpStream>,
}

impl WatchStream {
    /// The next event, `None` when the server ended the stream cleanly (the final
    /// zero-length chunk). Panics after 5 s without one.
    pub async fn next_event(&mut self) -> Option<Value> {
        tokio::time::timeout(Duration::from_secs(5), self.read_event())
            .await
            .expect("a watch event within 5s")
    }

    async fn read_event(&mut self) -> Option<Value> {
        let mut size_line = String::new();
        if self.reader.read_line(&mut size_line).await.unwrap() == 0 {
            panic!("connection closed without the final chunk");
        }
        let size = usize::from_str_radix(size_line.trim(), 16).unwrap();
        if size == 0 {
            return None;
        }
        let mut chunk = vec![0u8; size + 2];
        self.reader.read_exact(&mut chunk).await.unwrap();
        let text = String::from_utf8(chunk[..size].to_vec()).unwrap();
        assert!(
            text.ends_with('\n'),
            "one event per line, one line per chunk: {text:?}"
        );
        Some(serde_json::from_str(text.trim_end()).unwrap())
    }

    /// Whether nothing arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.read_event()).await.is_err()
    }
}

/// A ConfigMap manifest.
pub fn configmap(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

/// The CacheCluster-like CRD the tests register: status + scale subresources, printer
/// columns, a schema with required fields, enums and bounds.
pub fn widget_crd() -> Value {
    serde_yaml::from_str(WIDGET_CRD).unwrap()
}

pub const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.kcache.io
spec:
  group: test.kcache.io
  scope: Namespaced
  names:
    kind: Widget
    plural: widgets
    singular: widget
    shortNames: [wd]
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
        scale:
          specReplicasPath: .spec.replicas
          statusReplicasPath: .status.replicas
          labelSelectorPath: .status.selector
      additionalPrinterColumns:
        - name: Replicas
          type: integer
          jsonPath: .spec.replicas
        - name: Phase
          type: string
          jsonPath: .status.phase
        - name: Age
          type: date
          jsonPath: .metadata.creationTimestamp
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [image]
              properties:
                image: {type: string, minLength: 1}
                replicas: {type: integer, minimum: 0, maximum: 10, default: 1}
                policy: {type: string, enum: [lru, lfu]}
            status:
              type: object
              properties:
                phase: {type: string}
                replicas: {type: integer}
                selector: {type: string}
"#;

/// Registers the Widget CRD through the API.
pub async fn register_widgets(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(widget_crd()).unwrap();
    crds.create(&Default::default(), &crd).await.unwrap();
}

/// Polls `check` every 20 ms until it holds, for up to 5 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..250 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}
