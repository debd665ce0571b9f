//! The command line: the proxy run's flags (`config::RunArgs`), the CSR command in both
//! spellings, and the argv pre-pass that lets every long flag also be written Go-style with a
//! single dash (`-local-ip`), as the original Roundabout's users do.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};
use thiserror::Error;

use crate::config::RunArgs;
use crate::csr::CsrRequest;

/// Key file the CSR commands read when none is named (the original looked in the working directory).
const DEFAULT_CSR_KEY: &str = "./key.pem";

/// A SIP proxy that bridges UDP, TCP, TLS, WS and WSS endpoints.
///
/// Every flag may be written with one dash or two (`-local-ip` or `--local-ip`), and every run
/// flag may also come from the environment variable named in its help (`ROUNDABOUT_<NAME>`).
/// Switches take an optional value after `=`, as in Go: `-strict-host` is `-strict-host=true`;
/// they and their variables accept true/false, 1/0, yes/no and on/off.
#[derive(Debug, Parser)]
#[command(name = "roundabout", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub legacy_csr: LegacyCsrArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a certificate signing request for an existing RSA or ECDSA key, then exit.
    Csr(CsrArgs),
}

/// A command line that parses but asks for something that cannot be done.
#[derive(Debug, Error)]
pub enum CliError {
    #[error("-csr needs -csr-cn (the subject's common name)")]
    CsrWithoutCommonName,
}

/// What the command line asks for, once the two CSR spellings are merged.
#[derive(Debug)]
pub enum Action {
    Run(Box<RunArgs>),
    Csr(Box<CsrRequest>),
}

impl Cli {
    /// Resolves the subcommand, the original's `-csr` flag, or a proxy run.
    ///
    /// # Errors
    /// `-csr` without `-csr-cn`.
    pub fn into_action(self) -> Result<Action, CliError> {
        if let Some(Command::Csr(args)) = self.command {
            return Ok(Action::Csr(Box::new(args.into_request())));
        }
        if self.legacy_csr.csr {
            let key = self
                .run
                .tls_key
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CSR_KEY));
            return self
                .legacy_csr
                .into_request(key)
                .map(|request| Action::Csr(Box::new(request)));
        }
        Ok(Action::Run(Box::new(self.run)))
    }
}

/// Parses the process arguments, accepting single-dash long flags.
///
/// # Errors
/// clap's error for unknown flags, bad values, `--help` and `--version`.
pub fn parse<I>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = OsString>,
{
    let mut command = Cli::command();
    // Built, the command also lists clap's own --help and --version, so -help works too.
    command.build();
    let args = normalize_args(&command, args);
    let matches = command.try_get_matches_from_mut(args)?;
    Cli::from_arg_matches(&matches).map_err(|error| error.format(&mut command))
}

/// Rewrites `-name` and `-name=value` to `--name…` when `name` is a long flag of the command
/// being parsed (clap has no single-dash long flags). Values of flags that take one, short
/// flags and unknown words pass unchanged, so clap still reports what it does not know.
#[must_use]
pub fn normalize_args<I>(command: &clap::Command, args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = OsString>,
{
    let mut args = args.into_iter();
    let mut normalized: Vec<OsString> = args.next().into_iter().collect();
    let mut current = command;
    let mut value_follows = false;
    let mut only_values = false;
    for arg in args {
        if value_follows || only_values {
            value_follows = false;
            normalized.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            normalized.push(arg);
            continue;
        };
        if text == "--" {
            only_values = true;
            normalized.push(arg);
            continue;
        }
        let long = text
            .strip_prefix("--")
            .or_else(|| text.strip_prefix('-').filter(|word| word.len() > 1));
        let Some(long) = long else {
            if let Some(sub) = current.find_subcommand(text) {
                current = sub;
            }
            normalized.push(arg);
            continue;
        };
        let (name, inline_value) = match long.split_once('=') {
            Some((name, _)) => (name, true),
            None => (long, false),
        };
        match current.get_arguments().find(|a| a.get_long() == Some(name)) {
            Some(known) => {
                // A value that may be left out (`-udp-mtu [N]`) is one only if it looks like
                // one: the word after it is read as any other.
                value_follows = !inline_value
                    && known.get_action().takes_values()
                    && !known.is_require_equals_set()
                    && known.get_num_args().is_none_or(|n| n.min_values() > 0);
                normalized.push(format!("--{long}").into());
            }
            None => normalized.push(arg),
        }
    }
    normalized
}

/// The original's once-off CSR flags (`-csr -csr-cn … -tls-key …`).
#[derive(Debug, clap::Args)]
#[command(
    next_help_heading = "Certificate signing request (original flags; see also `roundabout csr`)"
)]
pub struct LegacyCsrArgs {
    /// Write a certificate signing request signed by -tls-key, then exit
    #[arg(long)]
    pub csr: bool,

    /// CSR subject country
    #[arg(long, value_name = "C", requires = "csr")]
    pub csr_c: Option<String>,

    /// CSR subject common name (required with -csr)
    #[arg(long, value_name = "NAME", requires = "csr")]
    pub csr_cn: Option<String>,

    /// CSR subject locality
    #[arg(long, value_name = "L", requires = "csr")]
    pub csr_l: Option<String>,

    /// CSR subject organisation
    #[arg(long, value_name = "O", requires = "csr")]
    pub csr_o: Option<String>,

    /// CSR subject organisational unit
    #[arg(long, value_name = "OU", requires = "csr")]
    pub csr_ou: Option<String>,

    /// CSR subject state or province
    #[arg(long, value_name = "ST", requires = "csr")]
    pub csr_p: Option<String>,

    /// CSR subject alternative names, comma-separated (DNS names or IP addresses)
    #[arg(long, value_name = "LIST", requires = "csr", value_delimiter = ',', action = ArgAction::Append)]
    pub csr_san: Vec<String>,
}

impl LegacyCsrArgs {
    fn into_request(self, key: PathBuf) -> Result<CsrRequest, CliError> {
        let common_name = self.csr_cn.ok_or(CliError::CsrWithoutCommonName)?;
        Ok(CsrRequest {
            key,
            common_name,
            sans: self.csr_san,
            country: self.csr_c,
            state: self.csr_p,
            locality: self.csr_l,
            organization: self.csr_o,
            organizational_unit: self.csr_ou,
            out: None,
        })
    }
}

/// `roundabout csr`: the new spelling of `-csr`.
#[derive(Debug, clap::Args)]
pub struct CsrArgs {
    /// PEM private key (PKCS#1, PKCS#8 or SEC1; RSA or ECDSA)
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CSR_KEY)]
    pub key: PathBuf,

    /// Subject common name
    #[arg(long, value_name = "NAME", required = true)]
    pub cn: String,

    /// Subject alternative names, comma-separated or repeated (DNS names or IP addresses)
    #[arg(long, value_name = "LIST", value_delimiter = ',', action = ArgAction::Append)]
    pub san: Vec<String>,

    /// Subject country
    #[arg(long, value_name = "C")]
    pub c: Option<String>,

    /// Subject state or province
    #[arg(long, value_name = "ST")]
    pub st: Option<String>,

    /// Subject locality
    #[arg(long, value_name = "L")]
    pub l: Option<String>,

    /// Subject organisation
    #[arg(long, value_name = "O")]
    pub o: Option<String>,

    /// Subject organisational unit
    #[arg(long, value_name = "OU")]
    pub ou: Option<String>,

    /// Write the PEM CSR here [default: stdout]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

impl CsrArgs {
    fn into_request(self) -> CsrRequest {
        CsrRequest {
            key: self.key,
            common_name: self.cn,
            sans: self.san,
            country: self.c,
            state: self.st,
            locality: self.l,
            organization: self.o,
            organizational_unit: self.ou,
            out: self.out,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::config::PortSetting;
    use crate::sip::Transport;

    fn os_args(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn normalized(args: &[&str]) -> Vec<String> {
        let mut command = Cli::command();
        command.build();
        normalize_args(&command, os_args(args))
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect()
    }

    fn parsed(args: &[&str]) -> Result<Cli, clap::Error> {
        parse(os_args(args))
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn normalization_table() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["rb", "-local-ip=1.2.3.4"], &["rb", "--local-ip=1.2.3.4"]),
            (
                &["rb", "-local-ip", "1.2.3.4"],
                &["rb", "--local-ip", "1.2.3.4"],
            ),
            (
                &["rb", "-strict-host", "-ack-ruri"],
                &["rb", "--strict-host", "--ack-ruri"],
            ),
            (&["rb", "-h"], &["rb", "-h"]),
            (&["rb", "-help"], &["rb", "--help"]),
            (&["rb", "-V"], &["rb", "-V"]),
            // A value that looks like a flag stays a value.
            (
                &["rb", "-csr-ou", "-strict-host"],
                &["rb", "--csr-ou", "-strict-host"],
            ),
            (
                &["rb", "--local-fqdn", "-ack-ruri"],
                &["rb", "--local-fqdn", "-ack-ruri"],
            ),
            // A value that may be left out is one when given, and a flag when not.
            (
                &["rb", "-udp-mtu", "1400", "-strict-host"],
                &["rb", "--udp-mtu", "1400", "--strict-host"],
            ),
            (
                &["rb", "-udp-mtu", "-strict-host"],
                &["rb", "--udp-mtu", "--strict-host"],
            ),
            // Unknown words are left for clap to report.
            (
                &["rb", "-no-such-flag", "-local"],
                &["rb", "-no-such-flag", "-local"],
            ),
            // Subcommand flags are looked up in the subcommand.
            (
                &["rb", "csr", "-cn", "x", "-san=a,b"],
                &["rb", "csr", "--cn", "x", "--san=a,b"],
            ),
            (
                &["rb", "csr", "-local-ip", "1.2.3.4"],
                &["rb", "csr", "-local-ip", "1.2.3.4"],
            ),
            // A value equal to a subcommand name is not the subcommand.
            (
                &["rb", "-local-fqdn", "csr", "-cn"],
                &["rb", "--local-fqdn", "csr", "-cn"],
            ),
            (&["rb", "--", "-strict-host"], &["rb", "--", "-strict-host"]),
        ];
        for (input, expected) in cases {
            assert_eq!(normalized(input), *expected, "input {input:?}");
        }
    }

    #[test]
    fn every_run_flag_reads_its_environment_variable() {
        let command = Cli::command();
        let mut checked = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "check-config"
                || long == "help"
                || long == "version"
                || long.starts_with("csr")
            {
                assert!(
                    arg.get_env().is_none(),
                    "--{long} has an environment variable"
                );
                continue;
            }
            let expected = format!("ROUNDABOUT_{}", long.to_ascii_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(expected.as_str()),
                "--{long}"
            );
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} run flags");
    }

    #[test]
    fn single_and_double_dash_parse_alike() {
        let single = parsed(&[
            "rb",
            "-local-ip",
            "203.0.113.5",
            "-strict-host",
            "-udp-port=off",
        ])
        .unwrap();
        let double = parsed(&[
            "rb",
            "--local-ip",
            "203.0.113.5",
            "--strict-host",
            "--udp-port=off",
        ])
        .unwrap();
        for cli in [single, double] {
            assert_eq!(cli.run.local_ip, "203.0.113.5".parse::<IpAddr>().unwrap());
            assert!(cli.run.strict_host);
            assert_eq!(cli.run.udp_port, PortSetting::Off);
            assert_eq!(cli.run.tcp_port, PortSetting::Port(5060));
        }
    }

    #[test]
    fn switches_take_an_optional_go_style_value() {
        let cli = parsed(&["rb", "-strict-host=false", "-ack-ruri", "-strict-client=1"]).unwrap();
        assert!(!cli.run.strict_host);
        assert!(cli.run.ack_ruri);
        assert!(cli.run.strict_client);
        assert!(!cli.run.contact_header_fqdn);
        assert!(parsed(&["rb", "-strict-host", "true"]).is_err());
        assert!(parsed(&["rb", "-strict-host=maybe"]).is_err());
    }

    #[test]
    fn trusted_server_may_repeat() {
        let cli = parsed(&["rb", "-trusted-server", "a", "--trusted-server=b"]).unwrap();
        assert_eq!(cli.run.trusted_server, ["a", "b"]);
    }

    #[test]
    fn default_network_is_case_insensitive() {
        let cli = parsed(&["rb", "-default-network", "WSS"]).unwrap();
        assert_eq!(cli.run.default_network, Transport::Wss);
        assert!(parsed(&["rb", "-default-network", "sctp"]).is_err());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["rb", "-udp-port", "70000"][..],
            &["rb", "-tcp-port", "5o60"],
            &["rb", "-trusted-client-mask", "129"],
            &["rb", "-max-message-size", "100"],
            &["rb", "-max-connections", "0"],
            &["rb", "-write-timeout", "0"],
            &["rb", "-send-queue-bytes", "1023"],
            &["rb", "-send-buffer-total", "1000"],
            &["rb", "-log-level", "loud"],
            &["rb", "-no-such-flag"],
            &["rb", "csr", "--key", "k.pem"],
            &["rb", "-csr-cn", "x"],
        ] {
            let error = parsed(args).unwrap_err();
            assert!(error.use_stderr(), "{args:?}");
        }
    }

    #[test]
    fn legacy_csr_flags_make_a_request() {
        let cli = parsed(&[
            "rb",
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
            "-tls-key",
            "/home/admin/key.pem",
        ])
        .unwrap();
        let Action::Csr(request) = cli.into_action().unwrap() else {
            panic!("not a csr")
        };
        assert_eq!(
            *request,
            CsrRequest {
                key: PathBuf::from("/home/admin/key.pem"),
                common_name: "proxya.example.com".into(),
                sans: vec!["proxya.example.com".into(), "203.0.113.5".into()],
                country: Some("US".into()),
                state: Some("California".into()),
                locality: Some("Mountain View".into()),
                organization: Some("The Firm".into()),
                organizational_unit: Some("Development".into()),
                out: None,
            }
        );
    }

    #[test]
    fn legacy_csr_defaults_key_and_needs_common_name() {
        let cli = parsed(&["rb", "-csr", "-csr-cn", "a.example"]).unwrap();
        let Action::Csr(request) = cli.into_action().unwrap() else {
            panic!("not a csr")
        };
        assert_eq!(request.key, PathBuf::from("./key.pem"));
        let cli = parsed(&["rb", "-csr"]).unwrap();
        assert!(matches!(
            cli.into_action(),
            Err(CliError::CsrWithoutCommonName)
        ));
    }

    #[test]
    fn csr_subcommand_makes_a_request() {
        let cli = parsed(&[
            "rb",
            "csr",
            "--key",
            "k.pem",
            "-cn",
            "a.example",
            "--san",
            "a.example,b.example",
            "--san",
            "192.0.2.1",
            "--st",
            "Bavaria",
            "--out",
            "req.pem",
        ])
        .unwrap();
        let Action::Csr(request) = cli.into_action().unwrap() else {
            panic!("not a csr")
        };
        assert_eq!(request.key, PathBuf::from("k.pem"));
        assert_eq!(request.common_name, "a.example");
        assert_eq!(request.sans, ["a.example", "b.example", "192.0.2.1"]);
        assert_eq!(request.state.as_deref(), Some("Bavaria"));
        assert_eq!(request.out, Some(PathBuf::from("req.pem")));
    }
}
