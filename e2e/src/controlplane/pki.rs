//! Keys and certificates of the control plane, made with the `openssl` command (present
//! on every machine that has Go or Debian's base system), so no crypto crate is needed:
//! a CA, kube-apiserver's serving certificate signed by it (the kubeconfig trusts the CA,
//! so clients verify the server), and the service-account signing key pair.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::Error;

/// Certificates are made per run; a day outlives any test or demo session.
const VALIDITY_DAYS: &str = "1";

/// Files under `<state>/pki`.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA that signed the serving certificate; the kubeconfig trusts it.
    pub ca_cert: PathBuf,
    /// kube-apiserver's serving certificate and key.
    pub serving_cert: PathBuf,
    /// Key of [`Pki::serving_cert`].
    pub serving_key: PathBuf,
    /// Private key that signs service-account tokens (kube-apiserver's TokenRequest and
    /// the controller-manager's token controller).
    pub sa_key: PathBuf,
    /// Public half of [`Pki::sa_key`], for verifying tokens.
    pub sa_pub: PathBuf,
}

impl Pki {
    /// Creates everything in `dir`. `sans` are the names and addresses clients use for
    /// the apiserver: its listen address and the `kubernetes` Service's names and IP.
    pub async fn create(dir: &Path, sans: &[San]) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)?;
        let pki = Self {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        };
        let ca_key = dir.join("ca.key");
        let csr = dir.join("apiserver.csr");
        let ext = dir.join("apiserver.ext");
        std::fs::write(&ext, serving_extensions(sans))?;
        let p = |p: &Path| p.display().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            VALIDITY_DAYS,
            "-subj",
            "/CN=kcache-local-ca",
        ];
        ca.extend(ec);
        openssl(
            "CA",
            &ca,
            &["-keyout", &p(&ca_key), "-out", &p(&pki.ca_cert)],
        )
        .await?;
        let mut req = vec!["req", "-new", "-subj", "/CN=kube-apiserver"];
        req.extend(ec);
        let req_files = ["-keyout", &p(&pki.serving_key), "-out", &p(&csr)];
        openssl("serving CSR", &req, &req_files).await?;
        let sign = ["x509", "-req", "-days", VALIDITY_DAYS, "-CAcreateserial"];
        let sign_files = [
            "-in",
            &p(&csr),
            "-CA",
            &p(&pki.ca_cert),
            "-CAkey",
            &p(&ca_key),
            "-extfile",
            &p(&ext),
            "-out",
            &p(&pki.serving_cert),
        ];
        openssl("serving certificate", &sign, &sign_files).await?;
        let genkey = [
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ];
        openssl("service-account key", &genkey, &["-out", &p(&pki.sa_key)]).await?;
        let public = ["pkey", "-pubout"];
        openssl(
            "service-account public key",
            &public,
            &["-in", &p(&pki.sa_key), "-out", &p(&pki.sa_pub)],
        )
        .await?;
        Ok(pki)
    }
}

/// A subject alternative name of the serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// A DNS name (`kubernetes.default.svc`).
    Dns(String),
    /// An address (`127.0.0.1`, the `kubernetes` Service's cluster IP).
    Ip(IpAddr),
}

/// The `openssl x509 -extfile` text for a server certificate valid for `sans`. rustls
/// (kube's TLS) insists on a v3 end-entity certificate with serverAuth and the
/// address in subjectAltName, not in the CN.
pub fn serving_extensions(sans: &[San]) -> String {
    let names: Vec<String> = sans
        .iter()
        .map(|san| match san {
            San::Dns(name) => format!("DNS:{name}"),
            San::Ip(ip) => format!("IP:{ip}"),
        })
        .collect();
    format!(
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName={}\n",
        names.join(",")
    )
}

async fn openssl(step: &'static str, args: &[&str], files: &[&str]) -> Result<(), Error> {
    let output = tokio::process::Command::new("openssl")
        .args(args)
        .args(files)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::Spawn {
            program: "openssl".into(),
            source: e,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Openssl {
            step,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serving_certificate_names_every_address_clients_use() {
        let ext = serving_extensions(&[
            San::Ip("127.0.0.3".parse().unwrap()),
            San::Dns("kubernetes.default.svc".into()),
        ]);
        assert!(
            ext.contains("subjectAltName=IP:127.0.0.3,DNS:kubernetes.default.svc\n"),
            "{ext}"
        );
        assert!(ext.contains("extendedKeyUsage=serverAuth"), "{ext}");
    }
}
