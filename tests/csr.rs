//! `roundabout csr` end to end: the real binary signs CSRs with keys that `openssl` generates in
//! every PEM form it writes (PKCS#1, PKCS#8, SEC1 with and without the `EC PARAMETERS` block),
//! and `openssl req -verify` checks the signature, subject and SANs. Unusable keys must fail,
//! name the file and leave no `--out` file behind.
//!
//! Without `openssl` on the PATH the tests print "SKIPPED" and pass, except under `CI=true`,
//! where a missing `openssl` is a failure.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::process::{run_to_exit, Finished};

/// Generous for a debug binary or an RSA key generation on a loaded machine; longer is a hang.
const TIMEOUT: Duration = Duration::from_secs(60);

const SUBJECT_ARGS: &[&str] = &[
    "--cn",
    "proxya.example.com",
    "--san",
    "proxya.example.com,203.0.113.5",
    "--c",
    "US",
    "--st",
    "California",
    "--l",
    "Mountain View",
    "--o",
    "The Firm",
    "--ou",
    "Development",
];
const FULL_SUBJECT: &str =
    "C = US, ST = California, L = Mountain View, O = The Firm, OU = Development, CN = proxya.example.com";
const FULL_SANS: &str = "DNS:proxya.example.com, IP Address:203.0.113.5";

/// Runs `program` in `dir` with stdin closed, failing the test when it does not exit within
/// [`TIMEOUT`].
fn run_in(dir: &Path, program: &str, args: &[&str]) -> Finished {
    run_to_exit(
        Command::new(program)
            .args(args)
            .current_dir(dir)
            .env_remove("RUST_LOG"),
        TIMEOUT,
    )
    .unwrap_or_else(|error| panic!("{program} {args:?}: {error}"))
}

fn roundabout(dir: &Path, args: &[&str]) -> Finished {
    run_in(dir, common::BIN, args)
}

/// `roundabout csr --key <key> --cn <cn> --out <out>`: the shortest request.
fn sign(dir: &Path, key: &str, cn: &str, out: &str) -> Finished {
    roundabout(dir, &["csr", "--key", key, "--cn", cn, "--out", out])
}

/// Runs `openssl`, failing the test if it fails.
fn openssl(dir: &Path, args: &[&str]) -> Finished {
    let run = run_in(dir, "openssl", args);
    assert!(run.success(), "openssl {args:?} failed: {}", run.stderr);
    run
}

/// A private key in one of the PEM forms `openssl` writes, and the command that writes it.
#[derive(Clone, Copy)]
enum Key {
    /// `genrsa -traditional`: PKCS#1, `RSA PRIVATE KEY`, of this many bits.
    Pkcs1Rsa(u32),
    /// `genpkey -algorithm RSA`: PKCS#8, `PRIVATE KEY`, of this many bits.
    Pkcs8Rsa(u32),
    /// `ecparam -genkey` on this curve: SEC1, `EC PRIVATE KEY` after an `EC PARAMETERS` block.
    Sec1WithParameters(&'static str),
    /// `ecparam -genkey -noout` on this curve: SEC1 alone.
    Sec1(&'static str),
    /// `genpkey -algorithm EC` on this curve: PKCS#8.
    Pkcs8Ec(&'static str),
    /// `genpkey -algorithm ED25519`: PKCS#8.
    Ed25519,
}

impl Key {
    /// The `openssl` arguments that write this key into `file`.
    fn openssl_args(self, file: &str) -> Vec<String> {
        let words = |words: &[&str]| words.iter().map(|w| w.to_string()).collect();
        match self {
            Key::Pkcs1Rsa(bits) => {
                words(&["genrsa", "-traditional", "-out", file, &bits.to_string()])
            }
            Key::Pkcs8Rsa(bits) => words(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &format!("rsa_keygen_bits:{bits}"),
                "-out",
                file,
            ]),
            Key::Sec1WithParameters(curve) => {
                words(&["ecparam", "-name", curve, "-genkey", "-out", file])
            }
            Key::Sec1(curve) => {
                words(&["ecparam", "-name", curve, "-genkey", "-noout", "-out", file])
            }
            Key::Pkcs8Ec(curve) => words(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                &format!("ec_paramgen_curve:{curve}"),
                "-out",
                file,
            ]),
            Key::Ed25519 => words(&["genpkey", "-algorithm", "ED25519", "-out", file]),
        }
    }

    /// Runs `openssl` to write this key into `dir/file`; how that went.
    fn try_generate(self, dir: &Path, file: &str) -> Finished {
        let args = self.openssl_args(file);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_in(dir, "openssl", &args)
    }

    /// Writes this key into `dir/file`, failing the test if `openssl` cannot.
    fn generate(self, dir: &Path, file: &str) {
        let run = self.try_generate(dir, file);
        assert!(run.success(), "openssl cannot write {file}: {}", run.stderr);
    }
}

/// A fresh directory, or `None` (after saying so) when `openssl` is missing outside CI.
fn setup() -> Option<tempfile::TempDir> {
    common::require("openssl")
        .then(|| tempfile::tempdir().expect("cannot create a temporary directory"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// What `openssl req -verify -text` says about a CSR file.
struct Parsed {
    subject: String,
    sans: String,
    text: String,
}

/// Checks the CSR's self-signature with OpenSSL and pulls out its subject and SANs.
fn verify(dir: &Path, csr: &str) -> Parsed {
    let run = openssl(dir, &["req", "-in", csr, "-verify", "-noout", "-text"]);
    // OpenSSL 3 says "Certificate request self-signature verify OK", 1.1 "verify OK".
    assert!(run.stderr.contains("verify OK"), "{}", run.stderr);
    let mut lines = run.stdout.lines().map(str::trim);
    let subject = run
        .stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Subject: "))
        .unwrap_or_default()
        .to_owned();
    let sans = lines
        .by_ref()
        .find(|line| line.starts_with("X509v3 Subject Alternative Name"))
        .and_then(|_| lines.next())
        .unwrap_or_default()
        .to_owned();
    Parsed {
        subject,
        sans,
        text: run.stdout,
    }
}

/// Signs a CSR with the full subject through the new spelling and checks it.
fn signs_with_full_subject(dir: &Path, key: &str, summary: &str) -> Parsed {
    let mut args = vec!["csr", "--key", key, "--out", "out.csr"];
    args.extend_from_slice(SUBJECT_ARGS);
    let run = roundabout(dir, &args);
    assert!(run.success(), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains(summary), "{}", run.stderr);
    assert!(run.stderr.contains(key), "{}", run.stderr);
    let parsed = verify(dir, "out.csr");
    assert_eq!(parsed.subject, FULL_SUBJECT);
    assert_eq!(parsed.sans, FULL_SANS);
    parsed
}

#[test]
fn pkcs1_rsa_key_signs_with_the_full_subject() {
    let Some(dir) = setup() else { return };
    Key::Pkcs1Rsa(2048).generate(dir.path(), "k.pem");
    assert!(read(&dir.path().join("k.pem")).starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let parsed = signs_with_full_subject(dir.path(), "k.pem", "RSA 2048-bit");
    assert!(
        parsed.text.contains("Public-Key: (2048 bit)"),
        "{}",
        parsed.text
    );
}

#[test]
fn pkcs8_rsa_key_without_san_uses_the_common_name() {
    let Some(dir) = setup() else { return };
    Key::Pkcs8Rsa(3072).generate(dir.path(), "k.pem");
    assert!(read(&dir.path().join("k.pem")).starts_with("-----BEGIN PRIVATE KEY-----"));
    let run = sign(dir.path(), "k.pem", "proxya.example.com", "out.csr");
    assert!(run.success(), "{}", run.stderr);
    assert!(run.stderr.contains("RSA 3072-bit"), "{}", run.stderr);
    assert!(run.stderr.contains("no --san given"), "{}", run.stderr);
    let parsed = verify(dir.path(), "out.csr");
    assert_eq!(parsed.subject, "CN = proxya.example.com");
    assert_eq!(parsed.sans, "DNS:proxya.example.com");
    assert!(
        parsed.text.contains("Public-Key: (3072 bit)"),
        "{}",
        parsed.text
    );
}

#[test]
fn sec1_p256_key_after_its_parameters_block() {
    let Some(dir) = setup() else { return };
    Key::Sec1WithParameters("prime256v1").generate(dir.path(), "k.pem");
    let key = read(&dir.path().join("k.pem"));
    assert!(key.starts_with("-----BEGIN EC PARAMETERS-----"), "{key}");
    assert!(key.contains("-----BEGIN EC PRIVATE KEY-----"), "{key}");
    let parsed = signs_with_full_subject(dir.path(), "k.pem", "ECDSA P-256");
    assert!(parsed.text.contains("ecdsa-with-SHA256"), "{}", parsed.text);
}

#[test]
fn sec1_p384_key_without_parameters_block() {
    let Some(dir) = setup() else { return };
    Key::Sec1("secp384r1").generate(dir.path(), "k.pem");
    assert!(read(&dir.path().join("k.pem")).starts_with("-----BEGIN EC PRIVATE KEY-----"));
    let parsed = signs_with_full_subject(dir.path(), "k.pem", "ECDSA P-384");
    assert!(parsed.text.contains("ecdsa-with-SHA384"), "{}", parsed.text);
}

#[test]
fn pkcs8_p256_key() {
    let Some(dir) = setup() else { return };
    Key::Pkcs8Ec("P-256").generate(dir.path(), "k.pem");
    assert!(read(&dir.path().join("k.pem")).starts_with("-----BEGIN PRIVATE KEY-----"));
    signs_with_full_subject(dir.path(), "k.pem", "ECDSA P-256");
}

#[test]
fn ed25519_key() {
    let Some(dir) = setup() else { return };
    // OpenSSL before 1.1.1 has no Ed25519; that is the tool's limit, not ours.
    if !Key::Ed25519.try_generate(dir.path(), "k.pem").success() {
        common::skipped("this openssl cannot generate Ed25519 keys");
        return;
    }
    signs_with_full_subject(dir.path(), "k.pem", "Ed25519");
}

#[test]
fn original_spelling_writes_stdout_with_the_default_key() {
    let Some(dir) = setup() else { return };
    Key::Sec1WithParameters("prime256v1").generate(dir.path(), "key.pem");
    let run = roundabout(
        dir.path(),
        &[
            "-csr",
            "-csr-c",
            "US",
            "-csr-cn",
            "proxya.example.com",
            "-csr-l",
            "Mountain View",
            "-csr-o",
            "The Firm",
            "-csr-ou",
            "Development",
            "-csr-p",
            "California",
            "-csr-san",
            "proxya.example.com,203.0.113.5",
        ],
    );
    assert!(run.success(), "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("./key.pem"), "{}", run.stderr);
    std::fs::write(dir.path().join("stdout.csr"), &run.stdout).expect("cannot save the CSR");
    let parsed = verify(dir.path(), "stdout.csr");
    assert_eq!(parsed.subject, FULL_SUBJECT);
    assert_eq!(parsed.sans, FULL_SANS);
}

/// Runs the new spelling on `key` and checks it fails, naming the file (and `expected`), and
/// writes nothing.
fn assert_refused(dir: &Path, key: &str, expected: &str) {
    let run = sign(dir, key, "proxya.example.com", "out.csr");
    assert!(!run.success(), "{key} was accepted: {}", run.stderr);
    assert!(run.stderr.contains(key), "{key}: {}", run.stderr);
    assert!(run.stderr.contains(expected), "{key}: {}", run.stderr);
    assert!(run.stdout.is_empty(), "{key}: {}", run.stdout);
    assert!(!dir.join("out.csr").exists(), "{key}: out.csr was written");
}

#[test]
fn missing_key_file_is_refused() {
    let Some(dir) = setup() else { return };
    assert_refused(dir.path(), "absent.pem", "cannot read key file");
}

#[test]
fn non_pem_file_is_refused() {
    let Some(dir) = setup() else { return };
    std::fs::write(dir.path().join("notes.txt"), "this is not a key\n").expect("cannot write");
    assert_refused(dir.path(), "notes.txt", "not a PEM file");
    // A PEM file without a private key in it names what it does hold.
    openssl(
        dir.path(),
        &["ecparam", "-name", "prime256v1", "-out", "params.pem"],
    );
    assert_refused(
        dir.path(),
        "params.pem",
        "no private key in it (found: EC PARAMETERS)",
    );
}

#[test]
fn weak_rsa_key_is_refused() {
    let Some(dir) = setup() else { return };
    Key::Pkcs1Rsa(1024).generate(dir.path(), "weak.pem");
    assert_refused(dir.path(), "weak.pem", "1024 bits");
}

#[test]
fn encrypted_keys_are_refused() {
    let Some(dir) = setup() else { return };
    // PKCS#8 encryption (ENCRYPTED PRIVATE KEY) and OpenSSL's legacy PEM encryption headers.
    openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-aes256",
            "-pass",
            "pass:x",
            "-out",
            "pkcs8.pem",
        ],
    );
    assert_refused(dir.path(), "pkcs8.pem", "encrypted");
    openssl(
        dir.path(),
        &[
            "ec",
            "-in",
            "pkcs8.pem",
            "-passin",
            "pass:x",
            "-aes256",
            "-passout",
            "pass:x",
            "-out",
            "legacy.pem",
        ],
    );
    assert!(read(&dir.path().join("legacy.pem")).contains("Proc-Type: 4,ENCRYPTED"));
    assert_refused(dir.path(), "legacy.pem", "encrypted");
}

#[test]
fn p521_key_is_refused() {
    let Some(dir) = setup() else { return };
    Key::Sec1WithParameters("secp521r1").generate(dir.path(), "p521.pem");
    assert_refused(dir.path(), "p521.pem", "P-521");
}

#[test]
fn out_may_not_overwrite_the_key() {
    let Some(dir) = setup() else { return };
    Key::Sec1WithParameters("prime256v1").generate(dir.path(), "k.pem");
    let before = read(&dir.path().join("k.pem"));
    let run = sign(dir.path(), "k.pem", "a.example", "./k.pem");
    assert!(!run.success(), "{}", run.stderr);
    assert!(run.stderr.contains("key file"), "{}", run.stderr);
    assert_eq!(read(&dir.path().join("k.pem")), before);
}
