//! Test certificates made at test time with `openssl`: a private CA and leaf certificates for
//! loopback names, so TLS and WSS peers can verify each other.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and the directory its files live in (removed on drop).
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    key: PathBuf,
}

/// A leaf certificate signed by a [`TestCa`].
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Leaf {
    /// Roundabout's flags for a WSS listener with this certificate on an ephemeral port, and
    /// no TLS listener.
    pub fn wss_flags(&self) -> Vec<String> {
        let (cert, key) = (self.cert.display(), self.key.display());
        ["-tls-cert", &cert.to_string(), "-tls-key", &key.to_string()]
            .into_iter()
            .chain(["-wss-port", "0", "-tls-port", "off"])
            .map(String::from)
            .collect()
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` with `options`: a new EC P-256 key into `key`, and into `out` a request (or,
/// with `-x509`, a self-signed certificate) for `subject`.
fn new_p256_key(dir: &Path, options: &[&str], key: &str, out: &str, subject: &str) {
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        out,
        "-subj",
        subject,
    ];
    openssl(&[&["req"], options, &new_key].concat(), dir);
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        new_p256_key(
            dir.path(),
            &["-x509", "-days", "2"],
            "ca.key",
            "ca.pem",
            "/CN=Roundabout test CA",
        );
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        TestCa { dir, cert, key }
    }

    /// A self-signed certificate for `name` (DNS SAN) and 127.0.0.1 (IP SAN), CA:TRUE as
    /// `openssl req -x509` makes it by default (a PBX's default certificate), valid two days.
    /// It lives in this CA's directory but is not signed by it.
    pub fn self_signed(&self, name: &str) -> Leaf {
        let (key, cert) = (format!("{name}-self.key"), format!("{name}-self.pem"));
        let san = format!("subjectAltName=DNS:{name},IP:127.0.0.1");
        new_p256_key(
            self.dir.path(),
            &["-x509", "-days", "2", "-addext", &san],
            &key,
            &cert,
            &format!("/CN={name}"),
        );
        Leaf {
            cert: self.dir.path().join(cert),
            key: self.dir.path().join(key),
        }
    }

    /// A certificate for `name` (DNS SAN) and 127.0.0.1 (IP SAN), EC P-256, valid two days.
    pub fn leaf(&self, name: &str) -> Leaf {
        let dir = self.dir.path();
        let (key, csr, cert, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName=DNS:{name},IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )
        .unwrap();
        new_p256_key(dir, &[], &key, &csr, &format!("/CN={name}"));
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &self.cert.display().to_string(),
                "-CAkey",
                &self.key.display().to_string(),
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
            dir,
        );
        Leaf {
            cert: dir.join(cert),
            key: dir.join(key),
        }
    }
}
