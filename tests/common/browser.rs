//! A WebRTC phone in a real browser: `tests/node/browser_phone.js`, Debian's chromium headless
//! under playwright-core, with JsSIP in the page (its arguments and events are listed at the
//! top of the script). [`BrowserPhone`] is a [`NodeScript`] that also makes sure the browser
//! ends with it.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::node::{self, NodeScript};
use super::process::poll_until;

/// How long chromium may take to start and load the page.
const STARTUP: Duration = Duration::from_secs(20);

/// How long the browser may outlive its script: chromium exits as soon as playwright's pipe
/// closes, in well under a second.
const BROWSER_EXIT: Duration = Duration::from_secs(5);

/// Whether chromium, Node and the locked packages (playwright-core among them) are there; what
/// is missing is reported by [`super::peer_missing`].
pub fn require_browser() -> bool {
    super::require("chromium") && node::require_node()
}

/// A running `browser_phone.js` and its chromium, killed by their IDs on drop.
pub struct BrowserPhone {
    script: NodeScript,
    /// chromium's main process, leader of a process group of its own (playwright starts it
    /// detached) that its helpers share.
    browser_pid: u32,
    /// The script's temp dir (`TMPDIR`): chromium's profile goes there, and is removed with it
    /// even when the script is killed before it could remove it itself.
    _tmp: tempfile::TempDir,
}

impl BrowserPhone {
    /// A phone for `uri` on the WebSocket at `ws_url`, for WSS taking the server's certificate
    /// `server_cert` (a [`super::certs::Leaf`]'s), with `extra` options (`--call`, `--answer`,
    /// …); returns once chromium has started.
    pub fn start(
        ws_url: &str,
        uri: &str,
        server_cert: Option<&Path>,
        extra: &[&str],
    ) -> BrowserPhone {
        let tmp = tempfile::tempdir().unwrap();
        let server_cert = server_cert.map(|cert| cert.display().to_string());
        let mut args = vec!["--ws-url", ws_url, "--uri", uri];
        if let Some(cert) = &server_cert {
            args.extend(["--server-cert", cert.as_str()]);
        }
        args.extend_from_slice(extra);
        let tmpdir = tmp.path().display().to_string();
        let mut script = NodeScript::spawn("browser_phone.js", &args, &[("TMPDIR", &tmpdir)]);
        let started = script.wait_any(&["started", "error"], STARTUP);
        let browser_pid = started
            .get("browser_pid")
            .and_then(node::Json::as_u64)
            .and_then(|pid| u32::try_from(pid).ok())
            .unwrap_or_else(|| panic!("chromium did not start\n{}", script.transcript()));
        BrowserPhone {
            script,
            browser_pid,
            _tmp: tmp,
        }
    }

    /// Hangs up now (a `hangup` line on the script's stdin).
    pub fn hangup(&mut self) {
        self.script.send_line("hangup");
    }

    /// Kills the script as [`NodeScript`]'s drop does; whether chromium and its helpers were
    /// all gone within [`BROWSER_EXIT`] after that. Those left are killed by their group ID.
    pub fn kill(&mut self) -> bool {
        self.script.kill();
        let gone = poll_until(
            Instant::now() + BROWSER_EXIT,
            Duration::from_millis(20),
            || (!group_alive(self.browser_pid)).then_some(()),
        )
        .is_some();
        if !gone {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.browser_pid)])
                .stderr(Stdio::null())
                .status();
        }
        gone
    }
}

/// Whether a process of group `pgid` still runs (zombies, which have ended and wait for
/// their parent, do not count).
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().take(3).collect())
            .unwrap_or_default();
        matches!(fields[..], [state, _, pgrp] if state != "Z" && pgrp == pgid.to_string())
    })
}

impl Deref for BrowserPhone {
    type Target = NodeScript;

    fn deref(&self) -> &NodeScript {
        &self.script
    }
}

impl DerefMut for BrowserPhone {
    fn deref_mut(&mut self) -> &mut NodeScript {
        &mut self.script
    }
}

impl Drop for BrowserPhone {
    fn drop(&mut self) {
        self.kill();
    }
}
