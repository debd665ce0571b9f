//! Kamailio as a real SIP peer: a configuration written from `tests/kamailio/base.cfg` (and
//! `tls.cfg` when the test gives a certificate) into a temp dir, checked with `kamailio -c`,
//! then run in the foreground with its log captured, and stopped by PID on drop.
//!
//! The test supplies the listen sockets and its own routing logic (`request_route`,
//! `onreply_route`, …), plus any extra modules and `modparam` lines, e.g. for a registrar:
//!
//! ```ignore
//! let kamailio = KamailioConfig::new(
//!     r#"request_route { if (is_method("REGISTER")) { save("location"); exit; } ... }"#,
//! )
//! .listen("udp", "127.0.0.9", free_port("127.0.0.9"))
//! .module("tm")
//! .module("usrloc")
//! .module("registrar")
//! .modparam(r#"modparam("usrloc", "db_mode", 0)"#)
//! .start();
//! ```
//!
//! The base configuration always loads kex, corex, sl, pv, xlog, textops, siputils, rr and
//! maxfwd, and owns `event_route[core:worker-one-init]` (it logs the line the start waits for).

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use super::process::{poll_until, wait_for_exit};

/// Logged by the base configuration once the first worker has initialised.
const READY: &str = "roundabout-test: kamailio ready";

/// Where Debian and most distributions put Kamailio's modules.
const MODULE_DIRS: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/aarch64-linux-gnu/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/lib64/kamailio/modules",
];

fn template(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kamailio")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn module_dir() -> Option<&'static str> {
    MODULE_DIRS
        .into_iter()
        .find(|dir| Path::new(dir).join("sl.so").is_file())
}

/// The certificate Kamailio presents as a TLS server, and how it checks the servers it dials.
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    /// Verify servers against this CA; `None`: no verification of servers.
    ca: Option<PathBuf>,
    /// Require a client certificate verified against this CA; `None`: none is asked for.
    client_ca: Option<PathBuf>,
}

/// What a test wants Kamailio to be; [`KamailioConfig::start`] runs it.
pub struct KamailioConfig {
    routing: String,
    listen: Vec<(String, SocketAddr)>,
    globals: Vec<String>,
    modules: Vec<String>,
    modparams: Vec<String>,
    tls: Option<Tls>,
    vars: Vec<(String, String)>,
    debug: u8,
    workers: (u8, u8),
}

impl KamailioConfig {
    /// `routing` is pasted into the configuration as it is: at least a `request_route` block.
    /// `@NAME@` placeholders in it are replaced by [`KamailioConfig::var`] values.
    pub fn new(routing: &str) -> KamailioConfig {
        KamailioConfig {
            routing: routing.to_string(),
            listen: Vec::new(),
            globals: Vec::new(),
            modules: Vec::new(),
            modparams: Vec::new(),
            tls: None,
            vars: Vec::new(),
            debug: 2,
            workers: (1, 1),
        }
    }

    /// A `listen=proto:ip:port` socket (`udp`, `tcp`, `tls`). Kamailio cannot report an
    /// ephemeral port, so take one from `common::free_port`.
    pub fn listen(mut self, proto: &str, ip: &str, port: u16) -> KamailioConfig {
        let addr = SocketAddr::new(ip.parse().expect("listen IP"), port);
        self.listen.push((proto.to_string(), addr));
        self
    }

    /// A core parameter line, e.g. `alias="kamailio.test"`.
    pub fn global(mut self, line: &str) -> KamailioConfig {
        self.globals.push(line.to_string());
        self
    }

    /// `loadmodule "<name>.so"`, loaded in the order given, before the base modules.
    pub fn module(mut self, name: &str) -> KamailioConfig {
        self.modules.push(name.to_string());
        self
    }

    /// A whole `modparam(...)` line.
    pub fn modparam(mut self, line: &str) -> KamailioConfig {
        self.modparams.push(line.to_string());
        self
    }

    /// Loads the tls module: `cert`/`key` for TLS listeners, and the servers Kamailio dials are
    /// verified against `verify_servers_with` (no verification with `None`).
    pub fn tls(mut self, cert: &Path, key: &Path, verify_servers_with: Option<&Path>) -> Self {
        self.tls = Some(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: verify_servers_with.map(Path::to_path_buf),
            client_ca: None,
        });
        self
    }

    /// Makes the TLS listeners require a client certificate that verifies against `ca`
    /// (`verify_certificate` and `require_certificate`); after [`KamailioConfig::tls`].
    pub fn require_client_certificate(mut self, ca: &Path) -> KamailioConfig {
        let tls = self
            .tls
            .as_mut()
            .expect("tls() before require_client_certificate()");
        tls.client_ca = Some(ca.to_path_buf());
        self
    }

    /// Replaces `@name@` in the routing logic with `value`.
    pub fn var(mut self, name: &str, value: impl ToString) -> KamailioConfig {
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    /// Kamailio's `debug` level (default 2, info; 3 is debug).
    pub fn debug(mut self, level: u8) -> KamailioConfig {
        self.debug = level;
        self
    }

    /// Worker processes per UDP socket (`children`) and for TCP/TLS (`tcp_children`); default
    /// one each, so that a stateless relay forwards messages in the order they came.
    pub fn workers(mut self, udp: u8, tcp: u8) -> KamailioConfig {
        self.workers = (udp, tcp);
        self
    }

    /// The configuration text, and tls.cfg's when TLS is on, written into `dir`.
    fn write(&self, dir: &Path) -> PathBuf {
        let mpath = module_dir().expect("Kamailio modules directory");
        let mut routing = self.routing.clone();
        for (name, value) in &self.vars {
            routing = routing.replace(&format!("@{name}@"), value);
        }
        let listen: Vec<String> = self
            .listen
            .iter()
            .map(|(proto, addr)| format!("listen={proto}:{addr}"))
            .collect();
        let modules: Vec<String> = self
            .modules
            .iter()
            .map(|m| format!("loadmodule \"{m}.so\""))
            .collect();
        let mut modparams = self.modparams.clone();
        let mut tls_module = String::new();
        if let Some(tls) = &self.tls {
            let tls_cfg = dir.join("tls.cfg");
            let verify_with = |ca: &Option<PathBuf>| match ca {
                Some(ca) => ("yes", format!("ca_list = {}", ca.display())),
                None => ("no", String::new()),
            };
            let (verify, ca_list) = verify_with(&tls.ca);
            let (client_verify, client_ca_list) = verify_with(&tls.client_ca);
            let text = template("tls.cfg")
                .replace("@CERT@", &tls.cert.display().to_string())
                .replace("@KEY@", &tls.key.display().to_string())
                .replace("@CLIENT_VERIFY@", client_verify)
                .replace("@CLIENT_CA_LIST@", &client_ca_list)
                .replace("@VERIFY@", verify)
                .replace("@CA_LIST@", &ca_list);
            std::fs::write(&tls_cfg, text).unwrap();
            tls_module = "loadmodule \"tls.so\"".to_string();
            modparams.insert(
                0,
                format!("modparam(\"tls\", \"config\", \"{}\")", tls_cfg.display()),
            );
        }
        let text = template("base.cfg")
            .replace("@DEBUG@", &self.debug.to_string())
            .replace("@CHILDREN@", &self.workers.0.to_string())
            .replace("@TCP_CHILDREN@", &self.workers.1.to_string())
            .replace(
                "@ENABLE_TLS@",
                if self.tls.is_some() { "yes" } else { "no" },
            )
            .replace("@LISTEN@", &listen.join("\n"))
            .replace("@GLOBALS@", &self.globals.join("\n"))
            .replace("@MPATH@", mpath)
            .replace("@TLS_MODULE@", &tls_module)
            .replace("@MODULES@", &modules.join("\n"))
            .replace("@MODPARAMS@", &modparams.join("\n"))
            .replace("@ROUTING@", &routing);
        let cfg = dir.join("kamailio.cfg");
        std::fs::write(&cfg, text).unwrap();
        cfg
    }

    /// Writes the configuration, checks it (`kamailio -c`), starts Kamailio and waits (at most
    /// 10 s) until its workers are up and every TCP/TLS listener accepts connections.
    pub fn start(self) -> Kamailio {
        let dir = tempfile::tempdir().unwrap();
        let cfg = self.write(dir.path());
        let check = Command::new("kamailio")
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("kamailio -c runs");
        assert!(
            check.status.success(),
            "kamailio -c rejects {}:\n{}\n{}\n--- config ---\n{}",
            cfg.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr),
            std::fs::read_to_string(&cfg).unwrap_or_default()
        );
        let mut child = Command::new("kamailio")
            .args(["-DD", "-E", "-m", "32", "-M", "8", "-f"])
            .arg(&cfg)
            .arg("-Y")
            .arg(dir.path())
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .current_dir(dir.path())
            // Its own process group: Kamailio signals its group when it stops, and a stray
            // worker can be ended by the group's ID (Kamailio's PID).
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kamailio starts");
        let output = super::CapturedLines::new(child.stderr.take().unwrap());
        let kamailio = Kamailio {
            child,
            output,
            listen: self.listen,
            cfg,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(
            kamailio.wait_for_log(READY, Duration::from_secs(10)),
            "kamailio did not start:\n{}",
            kamailio.logs()
        );
        for (proto, addr) in &kamailio.listen {
            if proto == "udp" {
                continue;
            }
            let accepts = || TcpStream::connect_timeout(addr, Duration::from_millis(200)).ok();
            assert!(
                poll_until(deadline, Duration::from_millis(20), accepts).is_some(),
                "kamailio does not accept on {proto}:{addr}:\n{}",
                kamailio.logs()
            );
        }
        kamailio
    }
}

/// A running Kamailio.
pub struct Kamailio {
    child: Child,
    output: super::CapturedLines,
    listen: Vec<(String, SocketAddr)>,
    /// The configuration it runs.
    pub cfg: PathBuf,
    /// Its configuration, tls.cfg, PID file and runtime files.
    pub dir: tempfile::TempDir,
}

impl Kamailio {
    /// Whether Kamailio and the given modules (`"tls"`, `"registrar"`, …) are installed; what is
    /// missing is reported by [`super::peer_missing`].
    pub fn available(modules: &[&str]) -> bool {
        if !super::require("kamailio") {
            return false;
        }
        let missing: Vec<&str> = modules
            .iter()
            .copied()
            .filter(|m| {
                module_dir().is_none_or(|dir| !Path::new(dir).join(format!("{m}.so")).is_file())
            })
            .collect();
        if missing.is_empty() {
            return true;
        }
        super::peer_missing(&format!("Kamailio modules {missing:?} are not installed"));
        false
    }

    /// The address of the first listener for `proto`.
    pub fn addr(&self, proto: &str) -> SocketAddr {
        self.listen
            .iter()
            .find(|(p, _)| p == proto)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("kamailio has no {proto} listener"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything Kamailio logged so far.
    pub fn logs(&self) -> String {
        self.output.text()
    }

    /// The log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits for a log line containing `needle` (lines already logged count too).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.output.wait_for(needle, timeout)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        // SIGTERM: Kamailio stops its workers and exits. SIGKILL to the group if it does not.
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = wait_for_exit(&mut self.child, Instant::now() + Duration::from_secs(5));
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// Kamailio as a plain registrar and location proxy. Every request and reply is logged with its
/// Call-ID, so a test can tell what reached Kamailio and what did not:
/// `KREQ <method> ci=… src=… ruri=… ct=…`, `KSAVED …` (the Contact stored for the AOR),
/// `KRELAY <method> ci=… to=<R-URI after lookup>`, `KNOTFOUND …`, `KREPLY <code> <method> …`.
const REGISTRAR: &str = r#"
request_route {
	xlog("L_NOTICE", "KREQ $rm ci=$ci src=$si:$sp ruri=$ru ct=$ct\n");
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	if (is_method("REGISTER")) {
		if (save("location", "@SAVE_FLAGS@")) {
			xlog("L_NOTICE", "KSAVED aor=$tu ci=$ci ct=$ct\n");
		} else {
			sl_reply_error();
		}
		exit;
	}
	# ACK for a relayed non-2xx and CANCEL follow their INVITE transaction; nothing else is
	# in-dialog here (no Record-Route), so a stray one is refused.
	if (is_method("ACK|CANCEL")) {
		if (t_check_trans()) {
			t_relay();
		}
		exit;
	}
	if (has_totag()) {
		sl_send_reply("481", "No Dialog Here");
		exit;
	}
	$var(found) = lookup("location");
	if ($var(found) < 0) {
		xlog("L_NOTICE", "KNOTFOUND $rm ci=$ci ruri=$ru rc=$var(found)\n");
		sl_send_reply("404", "Not Found");
		exit;
	}
	xlog("L_NOTICE", "KRELAY $rm ci=$ci to=$ru\n");
	if (!t_relay()) {
		sl_reply_error();
	}
	exit;
}

onreply_route {
	xlog("L_NOTICE", "KREPLY $rs $rm ci=$ci src=$si:$sp ct=$ct\n");
}
"#;

/// One contact per AOR: a new registration replaces the old one.
pub const ONE_CONTACT: &str = "0x04";

/// Kamailio on `ip` as registrar for `registrar.test`, on UDP: `save("location", save_flags)`,
/// with `modparams` added.
pub fn registrar(ip: &str, save_flags: &str, modparams: &[&str]) -> Kamailio {
    let mut config = KamailioConfig::new(REGISTRAR)
        .var("SAVE_FLAGS", save_flags)
        .listen("udp", ip, free_port(ip))
        .module("tm")
        .module("usrloc")
        .module("registrar")
        .modparam(r#"modparam("usrloc", "db_mode", 0)"#)
        // No GRUUs: the 2xx's Contacts stay plain, as a simple registrar writes them.
        .modparam(r#"modparam("registrar", "gruu_enabled", 0)"#);
    for line in modparams {
        config = config.modparam(line);
    }
    config.start()
}
