//! Certificates made in-process with rcgen, written as a Kubernetes Secret volume
//! writes them: files behind a `..data` symlink that an update swaps atomically.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority that signs node and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate chain and its key, PEM.
pub struct Identity {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IPs) usable by servers and clients
    /// alike, as cert-manager issues with usages [server auth, client auth].
    pub fn issue(&self, common_name: &str, names: &[&str]) -> Identity {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A directory laid out like a mounted Secret: `<key>` → `..data/<key>` →
/// `..<generation>/<key>`.
pub struct SecretDir {
    pub path: PathBuf,
    generation: AtomicU32,
}

impl SecretDir {
    pub fn new(files: &[(&str, &str)]) -> SecretDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "kcache-secret-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        let dir = SecretDir {
            path,
            generation: AtomicU32::new(0),
        };
        dir.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(Path::new("..data").join(name), dir.file(name)).unwrap();
        }
        dir
    }

    /// The path a container reads `name` at.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a new generation and swaps `..data` to it in one rename, as the kubelet
    /// does.
    pub fn update(&self, files: &[(&str, &str)]) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let dir = format!("..{generation}");
        std::fs::create_dir(self.path.join(&dir)).unwrap();
        for (name, content) in files {
            std::fs::write(self.path.join(&dir).join(name), content).unwrap();
        }
        let tmp = self.path.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&dir, &tmp).unwrap();
        std::fs::rename(&tmp, self.path.join("..data")).unwrap();
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A Secret of type kubernetes.io/tls as cert-manager writes it.
pub fn tls_secret(identity: &Identity, ca: &Ca) -> SecretDir {
    SecretDir::new(&[
        ("tls.crt", &identity.cert),
        ("tls.key", &identity.key),
        ("ca.crt", &ca.pem()),
    ])
}
