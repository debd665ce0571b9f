use super::servers::parse_dataset;
use super::token_key::{decode_key_hex, TOKEN_KEY_FILE};
use super::*;
use crate::cli::{self, Action};

const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

fn run_args(flags: &[&str]) -> RunArgs {
    let argv = ["roundabout"].iter().chain(flags).map(Into::into);
    match cli::parse(argv).unwrap().into_action().unwrap() {
        Action::Run(args) => *args,
        Action::Csr(_) => panic!("not a run"),
    }
}

fn validate(flags: &[&str]) -> Result<Validated, ConfigError> {
    let mut all = vec!["-token-key", KEY_HEX];
    all.extend_from_slice(flags);
    Config::from_args(&run_args(&all))
}

fn config(flags: &[&str]) -> Config {
    validate(flags).unwrap().config
}

fn error(flags: &[&str]) -> String {
    validate(flags).unwrap_err().to_string()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn trusted_server_datasets() {
    let cases: &[(&str, TrustedServer)] = &[
        (
            "203.0.113.20::5060:tcp:",
            TrustedServer {
                ip: ip("203.0.113.20"),
                fqdns: vec![],
                port: 5060,
                transport: Transport::Tcp,
                routes: vec![],
            },
        ),
        (
            "203.0.113.110:PBX.example.com/srv.tel.example.com:5061:WSS:203.0.113.150/Hop.example.com",
            TrustedServer {
                ip: ip("203.0.113.110"),
                fqdns: vec!["pbx.example.com".into(), "srv.tel.example.com".into()],
                port: 5061,
                transport: Transport::Wss,
                routes: vec![
                    RouteHop::Ip(ip("203.0.113.150")),
                    RouteHop::Name("hop.example.com".into()),
                ],
            },
        ),
        (
            "[2001:db8::1]:pbx.example.com:5060:udp:[2001:db8::2]/hop.example.com",
            TrustedServer {
                ip: ip("2001:db8::1"),
                fqdns: vec!["pbx.example.com".into()],
                port: 5060,
                transport: Transport::Udp,
                routes: vec![
                    RouteHop::Ip(ip("2001:db8::2")),
                    RouteHop::Name("hop.example.com".into()),
                ],
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_dataset(text).as_ref(), Ok(expected), "{text}");
    }
}

#[test]
fn several_datasets_and_flags_concatenate() {
    let config = config(&[
        "-trusted-server",
        "203.0.113.20::5060:tcp:,203.0.113.21::5060:udp:",
        "-trusted-server",
        "203.0.113.22::5080:tls:",
    ]);
    let ports: Vec<_> = config
        .trusted_servers
        .servers
        .iter()
        .map(|s| (s.ip, s.port, s.transport))
        .collect();
    assert_eq!(
        ports,
        [
            (ip("203.0.113.20"), 5060, Transport::Tcp),
            (ip("203.0.113.21"), 5060, Transport::Udp),
            (ip("203.0.113.22"), 5080, Transport::Tls),
        ]
    );
}

#[test]
fn malformed_datasets_name_dataset_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            "203.0.113.20:srv:50x0:tcp:",
            r#"dataset 2 "203.0.113.20:srv:50x0:tcp:": field 3 (port): "50x0" is not a port number"#,
        ),
        ("203.0.113.20:srv:5060:tcp", "has 4 fields, expected 5"),
        ("203.0.113.20:srv:5060:tcp::", "has 6 fields, expected 5"),
        ("2001:db8::1:srv:5060:tcp:", "has 8 fields"),
        (
            "203.0.113.256::5060:tcp:",
            r#"field 1 (ip-address): "203.0.113.256" is not an IP address"#,
        ),
        (
            "[203.0.113.2]::5060:tcp:",
            r#"field 1 (ip-address): "[203.0.113.2]" is not an IP address"#,
        ),
        ("::5060:tcp:", "field 1 (ip-address): must not be empty"),
        (
            "203.0.113.20:bad_name:5060:tcp:",
            r#"field 2 (fqdn-list): "bad_name" is not a host name"#,
        ),
        (
            "203.0.113.20:a..b:5060:tcp:",
            r#"field 2 (fqdn-list): "a..b" is not a host name"#,
        ),
        (
            "203.0.113.20:a.example//b:5060:tcp:",
            r#"field 2 (fqdn-list): "" is not a host name"#,
        ),
        (
            "203.0.113.20:-a.example:5060:tcp:",
            r#""-a.example" is not a host name"#,
        ),
        (
            "203.0.113.20:srv::tcp:",
            "field 3 (port): must not be empty",
        ),
        (
            "203.0.113.20:srv:0:tcp:",
            r#"field 3 (port): "0" is not a port number"#,
        ),
        (
            "203.0.113.20:srv:65536:tcp:",
            r#"field 3 (port): "65536" is not a port number"#,
        ),
        (
            "203.0.113.20:srv:+5060:tcp:",
            r#"field 3 (port): "+5060" is not a port number"#,
        ),
        (
            "203.0.113.20:srv:5060:sctp:",
            r#"field 4 (network-protocol): "sctp" is not a transport"#,
        ),
        (
            "203.0.113.20:srv:5060::",
            "field 4 (network-protocol): must not be empty",
        ),
        (
            "203.0.113.20:srv:5060:tcp:hop_1",
            r#"field 5 (route-list): "hop_1" is not an IP address or host name"#,
        ),
        (
            "203.0.113.20:srv:5060:tcp:203.0.113.999",
            r#"field 5 (route-list): "203.0.113.999""#,
        ),
        (
            "203.0.113.20:srv:5060:tcp:[2001:db8::2]:5060",
            "has 6 fields",
        ),
        (
            "203.0.113.20:srv:5060:tcp:a.example/",
            r#"field 5 (route-list): "" is not"#,
        ),
    ];
    for (dataset, expected) in cases {
        let list = format!("192.0.2.1::5060:udp:,{dataset}");
        let message = error(&["-trusted-server", &list]);
        assert!(
            message.starts_with("-trusted-server dataset 2 "),
            "{message}"
        );
        assert!(message.contains(expected), "{dataset}: {message}");
    }
}

#[test]
fn empty_datasets_are_errors() {
    for (list, index) in [
        ("192.0.2.1::5060:udp:,", 2),
        ("192.0.2.1::5060:udp:,,192.0.2.2::5060:udp:", 2),
        (",192.0.2.1::5060:udp:", 1),
    ] {
        let message = error(&["-trusted-server", list]);
        assert_eq!(
            message,
            format!(
                r#"-trusted-server dataset {index} "": empty dataset (a stray or trailing comma?)"#
            )
        );
    }
}

#[test]
fn exact_duplicate_dataset_is_rejected() {
    let message = error(&[
        "-trusted-server",
        "192.0.2.1:a:5060:udp:,192.0.2.1:A:5060:UDP:",
    ]);
    assert_eq!(
        message,
        r#"-trusted-server dataset 2 "192.0.2.1:A:5060:UDP:": duplicate of dataset 1"#
    );
    let config = config(&[
        "-trusted-server",
        "192.0.2.1::5060:udp:,192.0.2.1::5060:tcp:",
    ]);
    assert_eq!(config.trusted_servers.servers.len(), 2);
}

#[test]
fn lenient_mode_skips_malformed_datasets() {
    let validated = validate(&[
        "-lenient-trusted-server",
        "-trusted-server",
        "192.0.2.1::5060:udp:,192.0.2.2::x:udp:,192.0.2.3::5060:tcp:",
    ])
    .unwrap();
    let ips: Vec<_> = validated
        .config
        .trusted_servers
        .servers
        .iter()
        .map(|s| s.ip)
        .collect();
    assert_eq!(ips, [ip("192.0.2.1"), ip("192.0.2.3")]);
    assert_eq!(validated.skipped.len(), 1);
    assert!(validated.skipped[0].to_string().contains("dataset 2"));
}

#[test]
fn balancers_are_hosts_unless_given_a_prefix() {
    let cases: &[(&str, &[&str])] = &[
        ("10.0.0.7", &["10.0.0.7/32"]),
        (
            "10.0.0.7/24,2001:db8::1",
            &["10.0.0.0/24", "2001:db8::1/128"],
        ),
        ("[2001:db8::1],2001:db8::1", &["2001:db8::1/128"]),
        ("", &[]),
    ];
    for (list, expected) in cases {
        let balancers: Vec<String> = config(&["-proxy-protocol-from", list])
            .proxy_protocol_from
            .ranges
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(balancers, *expected, "{list}");
    }
    assert!(config(&[]).proxy_protocol_from.is_empty());
}

#[test]
fn client_ranges() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["-trusted-client-ip", "192.0.2.35"], &["192.0.2.0/24"]),
        (
            &[
                "-trusted-client-ip",
                "192.0.2.35,192.0.2.14,198.51.100.7",
                "-trusted-client-mask",
                "32",
            ],
            &["192.0.2.35/32", "192.0.2.14/32", "198.51.100.7/32"],
        ),
        // Reduced to the same network: kept once.
        (
            &["-trusted-client-ip", "192.0.2.35,192.0.2.14"],
            &["192.0.2.0/24"],
        ),
        (
            &["-trusted-client-ip", "192.0.2.35/16,198.51.100.0/24"],
            &["192.0.0.0/16", "198.51.100.0/24"],
        ),
        (
            &["-trusted-client-ip", "2001:db8:1:2::5"],
            &["2001:db8:1:2::/64"],
        ),
        (
            &[
                "-trusted-client-ip",
                "[2001:db8:1:2::5]",
                "-trusted-client-mask",
                "48",
            ],
            &["2001:db8:1::/48"],
        ),
        (
            &["-trusted-client-ip", "2001:db8::/32,192.0.2.9"],
            &["2001:db8::/32", "192.0.2.0/24"],
        ),
        (
            &["-trusted-client-ip", "0.0.0.0", "-trusted-client-mask", "0"],
            &["0.0.0.0/0"],
        ),
        (&["-trusted-client-ip", ""], &[]),
        (&[], &[]),
    ];
    for (flags, expected) in cases {
        let ranges: Vec<String> = config(flags)
            .trusted_clients
            .ranges
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ranges, *expected, "{flags:?}");
    }
}

#[test]
fn bad_client_entries_name_flag_and_entry() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["-trusted-client-ip", "192.0.2.300"],
            r#"-trusted-client-ip entry "192.0.2.300": not an IP address"#,
        ),
        (
            &["-trusted-client-ip", "192.0.2.1,"],
            r#"-trusted-client-ip entry "": empty entry"#,
        ),
        (
            &["-trusted-client-ip", "192.0.2.0/33"],
            r#"-trusted-client-ip entry "192.0.2.0/33""#,
        ),
        (
            &["-trusted-client-ip", "pbx.example.com"],
            r#"entry "pbx.example.com": not an IP address"#,
        ),
        (
            &[
                "-trusted-client-ip",
                "2001:db8::1,192.0.2.1",
                "-trusted-client-mask",
                "48",
            ],
            r#"-trusted-client-ip entry "192.0.2.1": -trusted-client-mask 48 is longer than an IPv4 prefix"#,
        ),
    ];
    for (flags, expected) in cases {
        let message = error(flags);
        assert!(message.contains(expected), "{flags:?}: {message}");
    }
}

#[test]
fn default_sip_server_must_be_trusted() {
    let trusted = "203.0.113.20::5060:tcp:,203.0.113.110::5060:wss:,203.0.113.110::5080:udp:";
    let config = config(&[
        "-trusted-server",
        trusted,
        "-default-sip-server",
        "203.0.113.110",
    ]);
    assert_eq!(config.default_sip_server, Some(1));
    assert_eq!(
        error(&[
            "-trusted-server",
            trusted,
            "-default-sip-server",
            "203.0.113.111"
        ]),
        "-default-sip-server 203.0.113.111 is not the IP address of any -trusted-server"
    );
}

#[test]
fn contact_header_fqdn_needs_local_fqdn() {
    assert_eq!(
        error(&["-contact-header-fqdn"]),
        "-contact-header-fqdn needs -local-fqdn"
    );
    let config = config(&["-contact-header-fqdn", "-local-fqdn", "ProxyA.example.com"]);
    assert_eq!(config.local_fqdn.as_deref(), Some("proxya.example.com"));
    assert_eq!(
        error(&["-local-fqdn", "a_b"]),
        r#"-local-fqdn "a_b" is not a host name"#
    );
}

#[test]
fn tls_ports_follow_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    fs::write(&cert, "cert").unwrap();
    fs::write(&key, "key").unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    let without = config(&[]);
    assert_eq!((without.ports.tls, without.ports.wss), (None, None));
    assert!(without.tls.is_none());
    let with = config(&["-tls-cert", cert, "-tls-key", key]);
    assert_eq!((with.ports.tls, with.ports.wss), (Some(5061), Some(7443)));
    let chosen = config(&[
        "-tls-cert",
        cert,
        "-tls-key",
        key,
        "-tls-port",
        "0",
        "-wss-port",
        "off",
    ]);
    assert_eq!((chosen.ports.tls, chosen.ports.wss), (Some(0), None));
    let off = config(&["-tls-port", "off"]);
    assert_eq!(off.ports.tls, None);

    assert_eq!(
        error(&["-tls-port", "5061"]),
        "-tls-port 5061 needs -tls-cert and -tls-key"
    );
    assert_eq!(
        error(&["-wss-port", "0"]),
        "-wss-port 0 needs -tls-cert and -tls-key"
    );
    assert_eq!(
        error(&["-tls-cert", cert]),
        "-tls-cert and -tls-key go together; only -tls-cert was given"
    );
    let missing = dir.path().join("missing.pem");
    let message = error(&["-tls-cert", cert, "-tls-key", missing.to_str().unwrap()]);
    assert!(
        message.starts_with("-tls-key ") && message.contains("missing.pem"),
        "{message}"
    );
}

#[test]
fn mutual_tls_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| {
        let path = dir.path().join(name);
        fs::write(&path, name).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (cert, key, ca) = (file("cert.pem"), file("key.pem"), file("ca.pem"));
    let (client_cert, client_key) = (file("client.pem"), file("client.key"));
    let listener = ["-tls-cert", &cert, "-tls-key", &key];

    let plain = config(&listener);
    assert_eq!(plain.mutual_tls, MutualTls::default());
    assert!(plain.describe().contains(&format!(
        "mutual-tls client-cert={cert} client-key={key} verify-client=off"
    )));
    let both = config(
        &[
            &listener[..],
            &["-tls-ca", &ca, "-tls-verify-client", "Trusted-Servers"],
            &[
                "-tls-client-cert",
                &client_cert,
                "-tls-client-key",
                &client_key,
            ],
        ]
        .concat(),
    );
    assert_eq!(both.mutual_tls.verify_client, VerifyClient::TrustedServers);
    assert!(both.describe().contains(&format!(
        "mutual-tls client-cert={client_cert} client-key={client_key} verify-client=trusted-servers"
    )));

    assert_eq!(
        error(&["-tls-client-key", &client_key]),
        "-tls-client-cert and -tls-client-key go together; only -tls-client-key was given"
    );
    let missing = dir.path().join("missing-client.pem");
    let message = error(&[
        "-tls-client-cert",
        missing.to_str().unwrap(),
        "-tls-client-key",
        &client_key,
    ]);
    assert!(
        message.starts_with("-tls-client-cert ") && message.contains("missing-client.pem"),
        "{message}"
    );
    assert_eq!(
        error(&["-tls-ca", &ca, "-tls-verify-client", "optional"]),
        "-tls-verify-client optional needs -tls-cert and -tls-key (a TLS or WSS listener)"
    );
    assert_eq!(
        error(&[&listener[..], &["-tls-verify-client", "required"]].concat()),
        "-tls-verify-client required needs -tls-ca: the roots client certificates must chain to"
    );
}

#[test]
fn ports_and_limits() {
    let config = config(&[
        "-udp-port",
        "off",
        "-tcp-port",
        "0",
        "-ws-port",
        "8080",
        "-max-message-size",
        "2048",
        "-idle-timeout",
        "60",
        "-send-queue",
        "8",
    ]);
    assert_eq!(
        config.ports,
        Ports {
            udp: None,
            tcp: Some(0),
            tls: None,
            ws: Some(8080),
            wss: None
        }
    );
    assert_eq!(config.limits.max_message, 2048);
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.limits.send_queue, 8);
    assert_eq!(
        config.limits.max_connections,
        Limits::DEFAULT.max_connections
    );
    assert_eq!(config.local_ip, ip("127.0.0.1"));
    assert_eq!(config.bind_ip, ip("127.0.0.1"));
    assert_eq!(config.default_network, Transport::Tcp);
}

#[test]
fn send_budgets_and_write_timeout() {
    let defaults = config(&[]).limits;
    assert_eq!(defaults.write_timeout, Duration::from_secs(10));
    assert_eq!(defaults.send_queue_bytes, 1 << 20);
    assert_eq!(defaults.send_buffer_total, 256 << 20);
    let set = config(&[
        "-write-timeout",
        "2",
        "-send-queue-bytes",
        "65536",
        "-send-buffer-total",
        "65536",
    ])
    .limits;
    assert_eq!(set.write_timeout, Duration::from_secs(2));
    assert_eq!(
        (set.send_queue_bytes, set.send_buffer_total),
        (65536, 65536)
    );
    assert_eq!(
        error(&["-send-queue-bytes", "65535"]),
        "-send-queue-bytes 65535 is below -max-message-size 65536: \
         no message of the largest size could be queued"
    );
    assert!(validate(&["-send-queue-bytes", "2048", "-max-message-size", "2048"]).is_ok());
    assert_eq!(
        error(&["-send-buffer-total", "1048575"]),
        "-send-buffer-total 1048575 is below -send-queue-bytes 1048576: \
         no connection could use its own budget"
    );
}

#[test]
fn drain_timeout() {
    assert_eq!(config(&[]).drain_timeout, Duration::from_secs(5));
    assert_eq!(
        config(&["-drain-timeout", "0"]).drain_timeout,
        Duration::ZERO
    );
}

#[test]
fn hep_is_off_unless_given_and_its_id_defaults() {
    assert_eq!(config(&[]).hep, None);
    assert!(config(&[]).describe().contains(&"hep-addr=off".to_owned()));
    let on = config(&["-hep-addr", "127.0.0.1:9060"]);
    let expected = Hep {
        addr: "127.0.0.1:9060".parse().unwrap(),
        agent_id: DEFAULT_HEP_ID,
    };
    assert_eq!(on.hep, Some(expected));
    assert!(on
        .describe()
        .contains(&"hep-addr=127.0.0.1:9060 hep-id=2001".to_owned()));
    let id = config(&["-hep-addr", "127.0.0.1:9060", "-hep-id", "4242"]);
    assert_eq!(id.hep.map(|hep| hep.agent_id), Some(4242));
}

#[test]
fn rtpengine_is_off_unless_given_and_takes_several_addresses() {
    assert!(config(&[]).rtpengine.is_empty());
    assert!(config(&[]).describe().contains(&"rtpengine=off".to_owned()));
    let two = config(&["-rtpengine", "127.0.0.1:2223,127.0.0.2:2224"]);
    let expected: Vec<std::net::SocketAddr> = vec![
        "127.0.0.1:2223".parse().unwrap(),
        "127.0.0.2:2224".parse().unwrap(),
    ];
    assert_eq!(two.rtpengine, expected);
    assert!(two
        .describe()
        .contains(&"rtpengine=127.0.0.1:2223,127.0.0.2:2224".to_owned()));
    let cases = [
        (
            "0.0.0.0:2223",
            "-rtpengine 0.0.0.0:2223: not an address rtpengine can listen on",
        ),
        ("127.0.0.1:0", "-rtpengine 127.0.0.1:0: port 0"),
        (
            "127.0.0.1:1,127.0.0.1:1",
            "-rtpengine 127.0.0.1:1: given twice",
        ),
        (
            "127.0.0.1:1,[::1]:1",
            "-rtpengine [::1]:1: IPv4 and IPv6 addresses mixed",
        ),
    ];
    for (value, message) in cases {
        assert_eq!(error(&["-rtpengine", value]), message);
    }
}

#[test]
fn dns_server_is_the_systems_unless_given() {
    assert_eq!(config(&[]).dns_server, None);
    assert!(config(&[])
        .describe()
        .contains(&"dns-server=system".to_owned()));
    let given = config(&["-dns-server", "127.0.0.1:5353"]);
    assert_eq!(given.dns_server, Some("127.0.0.1:5353".parse().unwrap()));
    assert!(given
        .describe()
        .contains(&"dns-server=127.0.0.1:5353".to_owned()));
    for value in ["0.0.0.0:53", "127.0.0.1:0", "[ff02::1]:53"] {
        assert_eq!(
            error(&["-dns-server", value]),
            format!("-dns-server {value}: not an address a DNS server can listen on")
        );
    }
}

#[test]
fn metrics_addr_is_off_unless_given() {
    assert_eq!(config(&[]).metrics_addr, None);
    assert!(config(&[])
        .describe()
        .contains(&"metrics-addr=off".to_owned()));
    let on = config(&["-metrics-addr", "127.0.0.1:9464"]);
    assert_eq!(on.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
    assert!(on
        .describe()
        .contains(&"metrics-addr=127.0.0.1:9464".to_owned()));
}

#[test]
fn token_key_from_hex_or_file() {
    let expected: [u8; 32] = std::array::from_fn(|i| {
        let pattern = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        pattern[i % 16]
    });
    assert_eq!(config(&[]).token_key, expected);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token.hex");
    fs::write(&file, format!("{KEY_HEX}\n")).unwrap();
    let args = run_args(&["-token-key", file.to_str().unwrap()]);
    assert_eq!(Config::from_args(&args).unwrap().config.token_key, expected);

    fs::write(&file, "abc").unwrap();
    let message = Config::from_args(&args).unwrap_err().to_string();
    assert!(
        message.starts_with("-token-key: ") && message.ends_with("expected 64 hex digits"),
        "{message}"
    );
    let args = run_args(&["-token-key", "not-hex-and-no-file"]);
    let message = Config::from_args(&args).unwrap_err().to_string();
    assert!(
        message.contains("neither 64 hex digits nor a readable file"),
        "{message}"
    );
}

#[test]
fn token_key_is_generated_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().to_str().unwrap();
    let args = run_args(&["-state-dir", state_dir]);
    let first = Config::from_args(&args).unwrap().config.token_key;
    let path = dir.path().join(TOKEN_KEY_FILE);
    let mode = fs::metadata(&path).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert_eq!(
        decode_key_hex(fs::read_to_string(&path).unwrap().trim()),
        Some(first)
    );
    let second = Config::from_args(&args).unwrap().config.token_key;
    assert_eq!(first, second);
    assert_ne!(first, [0; 32]);
    // Only the key file is left behind, no staging file.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn describe_lists_servers_ranges_and_switches() {
    let lines = config(&[
        "-local-ip", "203.0.113.5", "-strict-host", "-trusted-client-ip", "192.0.2.35",
        "-trusted-server",
        "203.0.113.20::5060:tcp:,[2001:db8::1]:pbx.example.com/b.example:5061:tls:[2001:db8::2]/hop.example",
    ])
    .describe();
    for expected in [
        "trusted-server 1 ip=203.0.113.20 fqdns=- port=5060 transport=tcp routes=-",
        "trusted-server 2 ip=2001:db8::1 fqdns=pbx.example.com/b.example port=5061 transport=tls routes=[2001:db8::2]/hop.example",
        "trusted-client-range 192.0.2.0/24",
        "local-ip=203.0.113.5 local-fqdn=- bind-ip=203.0.113.5",
        "strict-host=true strict-client=false ack-ruri=false contact-header-fqdn=false",
        "ports udp=5060 tcp=5060 tls=off ws=5066 wss=off",
    ] {
        assert!(lines.iter().any(|line| line == expected), "{expected} not in {lines:#?}");
    }
    assert!(!lines
        .iter()
        .any(|line| line.to_ascii_lowercase().contains("8899aabb")));
}

#[test]
fn host_names() {
    for good in ["a", "pbx.example.com", "x-1.example", "123.example.com"] {
        assert!(is_host_name(good), "{good}");
    }
    let long_label = "a".repeat(64);
    for bad in [
        "",
        ".",
        "a.",
        ".a",
        "a..b",
        "a_b",
        "-a",
        "a-",
        "192.0.2.300",
        long_label.as_str(),
        "é.example",
    ] {
        assert!(!is_host_name(bad), "{bad}");
    }
}

#[test]
fn port_settings() {
    assert_eq!("off".parse::<PortSetting>(), Ok(PortSetting::Off));
    assert_eq!("0".parse::<PortSetting>(), Ok(PortSetting::Port(0)));
    assert_eq!("65535".parse::<PortSetting>(), Ok(PortSetting::Port(65535)));
    assert!("+5060".parse::<PortSetting>().is_err());
    assert!("".parse::<PortSetting>().is_err());
}

#[test]
fn client_ranges_contain_their_addresses_and_mapped_ipv4() {
    let r = super::ClientRanges {
        ranges: vec![
            "192.0.2.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
    };
    assert!(r.contains("192.0.2.200".parse().unwrap()));
    assert!(r.contains("::ffff:192.0.2.1".parse().unwrap()));
    assert!(r.contains("2001:db8:1::5".parse().unwrap()));
    assert!(!r.contains("192.0.3.1".parse().unwrap()));
    assert!(!super::ClientRanges::default().contains("192.0.2.1".parse().unwrap()));
}

#[test]
fn udp_mtu_is_off_unless_given_and_1300_given_alone() {
    assert_eq!(config(&[]).udp_mtu, None);
    assert!(config(&[]).describe().contains(&"udp-mtu=off".to_owned()));
    assert_eq!(config(&["-udp-mtu"]).udp_mtu, Some(1300));
    assert_eq!(config(&["-udp-mtu", "-strict-host"]).udp_mtu, Some(1300));
    assert_eq!(config(&["-udp-mtu", "1400"]).udp_mtu, Some(1400));
    let given = config(&["-udp-mtu=1400"]);
    assert_eq!(given.udp_mtu, Some(1400));
    assert!(given.describe().contains(&"udp-mtu=1400".to_owned()));
    assert_eq!(config(&["-udp-mtu=200"]).udp_mtu, Some(200));
    assert_eq!(config(&["-udp-mtu=65535"]).udp_mtu, Some(65535));
    for value in ["199", "65536", "0"] {
        assert_eq!(
            error(&[&format!("-udp-mtu={value}")]),
            format!("-udp-mtu {value}: between 200 and 65535 bytes")
        );
    }
    assert_eq!(
        error(&["-udp-mtu", "-tcp-port", "off"]),
        "-udp-mtu needs a TCP listener (-tcp-port): the Via and Contact of a request sent over TCP name it"
    );
}
