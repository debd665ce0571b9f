//! The real binary's command line: help, `--check-config`, usage errors and their exit codes,
//! both flag spellings and the `ROUNDABOUT_*` environment variables.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::process::{run_to_exit, Finished};

const EX_USAGE: i32 = 64;
/// Generous for a debug binary on a loaded machine; a run that takes longer is a hang.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

const SERVERS: &str =
    "203.0.113.20:server.example.com:5060:tcp:,203.0.113.110:pbx.example.com/srv.tel.example.com:5060:wss:";

/// The flags the README's two typical command lines begin with.
const TYPICAL: [&str; 7] = [
    "-local-ip",
    "203.0.113.5",
    "-local-fqdn",
    "proxya.example.com",
    "-strict-host",
    "-strict-client",
    "-ack-ruri",
];

/// Runs the binary in `dir` with no inherited `ROUNDABOUT_*` or `RUST_LOG`, waiting for it to
/// exit (or killing it after [`EXIT_TIMEOUT`]).
fn roundabout(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut command = Command::new(common::BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ROUNDABOUT_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir);
    run_to_exit(&mut command, EXIT_TIMEOUT)
        .unwrap_or_else(|error| panic!("roundabout {args:?}: {error}"))
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("cannot create a temporary directory")
}

#[test]
fn help_lists_every_flag() {
    let dir = temp_dir();
    let run = roundabout(dir.path(), &["--help"], &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr);
    for flag in [
        "local-ip",
        "local-fqdn",
        "strict-host",
        "strict-client",
        "ack-ruri",
        "contact-header-fqdn",
        "trusted-server",
        "trusted-client-ip",
        "trusted-client-mask",
        "proxy-protocol-from",
        "default-sip-server",
        "default-network",
        "udp-port",
        "tcp-port",
        "tls-port",
        "ws-port",
        "wss-port",
        "tls-cert",
        "tls-key",
        "tls-ca",
        "tls-client-cert",
        "tls-client-key",
        "tls-verify-client",
        "bind-ip",
        "token-key",
        "state-dir",
        "log-level",
        "check-config",
        "lenient-trusted-server",
        "drain-timeout",
        "metrics-addr",
        "hep-addr",
        "hep-id",
        "max-message-size",
        "max-connections",
        "max-connections-per-ip",
        "idle-timeout",
        "handshake-timeout",
        "read-timeout",
        "write-timeout",
        "ws-ping-interval",
        "client-cache-size",
        "send-queue",
        "send-queue-bytes",
        "send-buffer-total",
        "csr",
        "csr-c",
        "csr-cn",
        "csr-l",
        "csr-o",
        "csr-ou",
        "csr-p",
        "csr-san",
    ] {
        // The whole name: `--csr` must not be found as the start of `--csr-cn`.
        let listed = run.stdout.lines().any(|line| {
            line.trim_start()
                .strip_prefix(&format!("--{flag}"))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '[']))
        });
        assert!(listed, "--{flag} missing from --help");
    }
    for documented in [
        "[default: 127.0.0.1]",
        "[default: 5060]",
        "[default: 5066]",
        "[default: 65536]",
        "[env: ROUNDABOUT_TRUSTED_SERVER=]",
        "[2001:db8::1]:pbx.example.com:5060:udp:[2001:db8::2]/hop.example.com",
    ] {
        assert!(
            run.stdout.contains(documented),
            "{documented} missing from --help"
        );
    }

    let csr_help = roundabout(dir.path(), &["csr", "--help"], &[]);
    assert_eq!(csr_help.code(), 0);
    for flag in [
        "--key", "--cn", "--san", "--c ", "--st", "--l ", "--o ", "--ou", "--out",
    ] {
        assert!(
            csr_help.stdout.contains(flag),
            "{flag} missing from csr --help"
        );
    }
}

#[test]
fn check_config_prints_the_first_typical_line() {
    let dir = temp_dir();
    let run = roundabout(
        dir.path(),
        &[
            &TYPICAL[..],
            &["-trusted-server", SERVERS, "--check-config"],
        ]
        .concat(),
        &[],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    for expected in [
        "trusted-server 1 ip=203.0.113.20 fqdns=server.example.com port=5060 transport=tcp routes=-",
        "trusted-server 2 ip=203.0.113.110 fqdns=pbx.example.com/srv.tel.example.com port=5060 transport=wss routes=-",
        "trusted-client-ranges none",
        "local-ip=203.0.113.5 local-fqdn=proxya.example.com bind-ip=203.0.113.5",
        "strict-host=true strict-client=true ack-ruri=true contact-header-fqdn=false",
    ] {
        assert!(lines.contains(&expected), "{expected:?} not in\n{}", run.stdout);
    }
    assert!(
        dir.path().join("roundabout.key").is_file(),
        "token key not kept in the state dir"
    );
}

#[test]
fn check_config_prints_the_second_typical_line() {
    let dir = temp_dir();
    let run = roundabout(
        dir.path(),
        &[
            &TYPICAL[..],
            &[
                "-trusted-client-ip",
                "192.0.2.35,192.0.2.14,192.0.2.28,192.0.2.10",
                "-trusted-client-mask",
                "32",
                "-trusted-server",
                SERVERS,
                "-default-sip-server",
                "203.0.113.110",
                "--check-config",
            ],
        ]
        .concat(),
        &[],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let ranges: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("trusted-client-range "))
        .collect();
    assert_eq!(
        ranges,
        [
            "192.0.2.35/32",
            "192.0.2.14/32",
            "192.0.2.28/32",
            "192.0.2.10/32"
        ]
    );
    assert!(
        lines.contains(&"default-sip-server=203.0.113.110 (trusted-server 2) default-network=tcp"),
        "{}",
        run.stdout
    );
}

#[test]
fn check_config_fails_on_a_malformed_dataset() {
    let dir = temp_dir();
    let list = "203.0.113.20::5060:tcp:,203.0.113.21:srv:50x0:tcp:";
    let run = roundabout(
        dir.path(),
        &["-trusted-server", list, "--check-config"],
        &[],
    );
    assert_eq!(run.code(), EX_USAGE);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(
        run.stderr.trim_end(),
        r#"roundabout: -trusted-server dataset 2 "203.0.113.21:srv:50x0:tcp:": field 3 (port): "50x0" is not a port number (1-65535)"#
    );

    // Lenient: the tables are printed without it, and the check still fails.
    let run = roundabout(
        dir.path(),
        &[
            "-trusted-server",
            list,
            "-lenient-trusted-server",
            "--check-config",
        ],
        &[],
    );
    assert_eq!(run.code(), EX_USAGE);
    assert!(
        run.stdout.contains("trusted-server 1 ip=203.0.113.20 "),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("trusted-server 2 "), "{}", run.stdout);
    assert!(run.stderr.contains("dataset 2"), "{}", run.stderr);
}

#[test]
fn malformed_dataset_stops_the_daemon_before_it_binds() {
    let dir = temp_dir();
    // The port is taken: a bind attempt would fail differently from the configuration error.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = roundabout(
        dir.path(),
        &[
            "-tcp-port",
            &port,
            "-udp-port",
            "off",
            "-ws-port",
            "off",
            "-trusted-server",
            "203.0.113.20::5060:tcp:,203.0.113.21:bad_name:5060:tcp:",
        ],
        &[],
    );
    assert_eq!(run.code(), EX_USAGE, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(
            r#"roundabout: -trusted-server dataset 2 "203.0.113.21:bad_name:5060:tcp:": field 2 (fqdn-list): "bad_name" is not a host name"#
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("listening"), "{}", run.stderr);
}

#[test]
fn usage_errors_exit_64() {
    let dir = temp_dir();
    // Readable is all validation asks of these (they are parsed after it).
    for name in ["cert.pem", "key.pem"] {
        std::fs::write(dir.path().join(name), name).unwrap();
    }
    for (args, expected) in [
        (&["-no-such-flag"][..], "unexpected argument"),
        (&["-udp-port", "70000"], "--udp-port"),
        (
            &["-contact-header-fqdn"],
            "roundabout: -contact-header-fqdn needs -local-fqdn",
        ),
        (
            &["-tls-port", "5061"],
            "roundabout: -tls-port 5061 needs -tls-cert and -tls-key",
        ),
        (
            &["-trusted-client-ip", "192.0.2.0/40"],
            r#"-trusted-client-ip entry "192.0.2.0/40""#,
        ),
        (
            &["-proxy-protocol-from", "10.0.0.0/8,lb.example"],
            r#"-proxy-protocol-from entry "lb.example": not an IP address or network"#,
        ),
        (
            &["-default-sip-server", "192.0.2.1"],
            "-default-sip-server 192.0.2.1 is not",
        ),
        (
            &["-tls-verify-client", "sometimes"],
            "invalid value 'sometimes' for '--tls-verify-client <MODE>'",
        ),
        (
            &["-tls-verify-client", "required"],
            "roundabout: -tls-verify-client required needs -tls-cert and -tls-key",
        ),
        (
            &[
                "-tls-cert",
                "cert.pem",
                "-tls-key",
                "key.pem",
                "-tls-verify-client",
                "optional",
            ],
            "roundabout: -tls-verify-client optional needs -tls-ca",
        ),
        (
            &[
                "-tls-client-cert",
                "missing.pem",
                "-tls-client-key",
                "key.pem",
            ],
            "roundabout: -tls-client-cert missing.pem: ",
        ),
        (
            &["-tls-client-cert", "client.pem"],
            "roundabout: -tls-client-cert and -tls-client-key go together",
        ),
        (
            &["-metrics-addr", "localhost:9464"],
            "invalid value 'localhost:9464' for '--metrics-addr <IP:PORT>'",
        ),
        (
            &["-metrics-addr", "127.0.0.1"],
            "invalid value '127.0.0.1' for '--metrics-addr <IP:PORT>'",
        ),
        (
            &["-hep-addr", "localhost:9060"],
            "invalid value 'localhost:9060' for '--hep-addr <IP:PORT>'",
        ),
        (
            &["-hep-addr", "127.0.0.1:9060", "-hep-id", "two"],
            "invalid value 'two' for '--hep-id <N>'",
        ),
        (
            &["-hep-addr", "127.0.0.1:9060", "-hep-id", "4294967296"],
            "invalid value '4294967296' for '--hep-id <N>'",
        ),
        (&["-hep-id", "7"], "roundabout: -hep-id needs -hep-addr"),
        (&["-csr", "-csr-c", "US"], "roundabout: -csr needs -csr-cn"),
        (&["csr", "--key", "key.pem"], "--cn"),
    ] {
        let run = roundabout(dir.path(), args, &[]);
        assert_eq!(run.code(), EX_USAGE, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn single_and_double_dash_spellings_agree() {
    let dir = temp_dir();
    let key = "00".repeat(32);
    let single = roundabout(
        dir.path(),
        &[
            "-local-ip=198.51.100.1",
            "-ack-ruri",
            "-token-key",
            &key,
            "-default-network",
            "udp",
            "--check-config",
        ],
        &[],
    );
    let double = roundabout(
        dir.path(),
        &[
            "--local-ip=198.51.100.1",
            "--ack-ruri",
            "--token-key",
            &key,
            "--default-network",
            "udp",
            "-check-config",
        ],
        &[],
    );
    assert_eq!(single.code(), 0, "{}", single.stderr);
    assert_eq!(single.stdout, double.stdout);
    assert!(
        single.stdout.contains("default-network=udp"),
        "{}",
        single.stdout
    );
    assert!(
        single.stdout.contains("local-ip=198.51.100.1 "),
        "{}",
        single.stdout
    );
}

#[test]
fn environment_variables_set_flags() {
    let dir = temp_dir();
    let run = roundabout(
        dir.path(),
        &["--check-config"],
        &[
            ("ROUNDABOUT_LOCAL_IP", "198.51.100.7"),
            ("ROUNDABOUT_STRICT_HOST", "1"),
            ("ROUNDABOUT_ACK_RURI", "false"),
            ("ROUNDABOUT_TRUSTED_SERVER", "203.0.113.20::5070:udp:"),
            ("ROUNDABOUT_TRUSTED_CLIENT_IP", "192.0.2.35"),
            ("ROUNDABOUT_UDP_PORT", "off"),
            ("ROUNDABOUT_TOKEN_KEY", &"ab".repeat(32)),
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    for expected in [
        "local-ip=198.51.100.7 local-fqdn=- bind-ip=198.51.100.7",
        "strict-host=true strict-client=false ack-ruri=false contact-header-fqdn=false",
        "trusted-server 1 ip=203.0.113.20 fqdns=- port=5070 transport=udp routes=-",
        "trusted-client-range 192.0.2.0/24",
    ] {
        assert!(
            run.stdout.lines().any(|line| line == expected),
            "{expected:?} not in\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("ports udp=off "), "{}", run.stdout);
    assert!(
        !dir.path().join("roundabout.key").exists(),
        "key generated despite ROUNDABOUT_TOKEN_KEY"
    );

    // A command-line flag wins over its environment variable.
    let run = roundabout(
        dir.path(),
        &[
            "--check-config",
            "-local-ip",
            "198.51.100.8",
            "-token-key",
            &"ab".repeat(32),
        ],
        &[("ROUNDABOUT_LOCAL_IP", "198.51.100.7")],
    );
    assert!(
        run.stdout.contains("local-ip=198.51.100.8 "),
        "{}",
        run.stdout
    );
}

#[test]
fn bad_boolean_environment_value_is_a_usage_error() {
    let dir = temp_dir();
    let run = roundabout(
        dir.path(),
        &["--check-config"],
        &[("ROUNDABOUT_STRICT_CLIENT", "maybe")],
    );
    assert_eq!(run.code(), EX_USAGE);
    assert!(run.stderr.contains("--strict-client"), "{}", run.stderr);
}
