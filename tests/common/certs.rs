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

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Roundabout test CA",
            ],
            dir.path(),
        );
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        TestCa { dir, cert, key }
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
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
            dir,
        );
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
