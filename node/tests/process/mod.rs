//! The real kcache-node binary as a child process on ephemeral ports, for tests that
//! must see what a process does: crash, grow, log a panic.
#![allow(dead_code, clippy::unwrap_used)] // each includer uses its own part

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A running kcache-node; killed when dropped.
pub struct NodeProcess {
    child: Child,
    /// host:port of its gRPC listener.
    pub grpc: String,
    /// host:port of its admin listener (/metrics, /readyz).
    pub admin: String,
    /// Everything it wrote to stderr so far (panics go there).
    stderr: Arc<Mutex<String>>,
}

impl NodeProcess {
    /// Starts kcache-node with `args` after ephemeral gRPC and admin addresses and JSON
    /// logs, and waits until it serves.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kcache-node"))
            .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kcache-node starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        // The start-up line names the gRPC address; the rest of stdout is drained so
        // the node never blocks on a full pipe.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let field = |line: &str, name: &str| {
            let rest = line.split(&format!("\"{name}\":\"")).nth(1)?;
            Some(rest.split('"').next()?.to_owned())
        };
        let (grpc, admin) = loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                panic!(
                    "kcache-node exited before serving: {}",
                    stderr.lock().unwrap()
                );
            };
            let line = line.unwrap();
            if let (Some(grpc), Some(admin)) = (field(&line, "grpc"), field(&line, "admin")) {
                break (grpc, admin);
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            grpc,
            admin,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, from /proc/<pid>/status.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    /// The value of an unlabelled metric on the node's /metrics (None when absent).
    pub fn metric(&self, name: &str) -> Option<f64> {
        use std::io::Write as _;
        let mut stream = std::net::TcpStream::connect(&self.admin).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    }

    /// Fails the test if the process has exited or has logged a panic.
    pub fn assert_alive_without_panics(&mut self) {
        let exited = self.child.try_wait().unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        assert!(
            exited.is_none(),
            "kcache-node exited with {exited:?}; stderr: {stderr}"
        );
        assert!(
            !stderr.contains("panicked"),
            "kcache-node panicked: {stderr}"
        );
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
