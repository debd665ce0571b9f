//! Node.js peers for the WebSocket tests: JsSIP as a browser runs it, and a `ws` SIP server.
//!
//! The scripts live in `tests/node` with their `package.json` and lockfile; `npm ci` installs
//! them once (per test binary, and serialised across binaries by a lock directory) when
//! `node_modules` does not hold exactly the pinned versions. Each script prints one JSON object
//! per line on stdout; [`NodeScript::wait_for`] waits on those lines, never on the clock alone.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::process::{poll_until, run_to_exit};
use super::{missing, peer_missing};

/// How long `npm ci` may take before the tests give up on it.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// `tests/node`, where the scripts and their `package.json` are.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// Whether Node and the locked packages are there, installing the packages with `npm ci` the
/// first time. Like [`super::require`]: what is missing is reported by [`peer_missing`], to
/// every test that asks.
pub fn require_node() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| match missing("node") {
        Some(reason) => Err(reason),
        None => install(),
    });
    match ready {
        Ok(()) => true,
        Err(reason) => {
            peer_missing(reason);
            false
        }
    }
}

/// Installs the pinned packages unless they are there; why that failed.
fn install() -> Result<(), String> {
    let dir = dir();
    if installed(&dir) {
        return Ok(());
    }
    if let Some(reason) = missing("npm") {
        return Err(reason);
    }
    let _lock = InstallLock::acquire(&dir);
    if installed(&dir) {
        return Ok(()); // another test binary installed them meanwhile
    }
    eprintln!(
        "installing the Node test peers: npm ci in {}",
        dir.display()
    );
    let outcome = run_bounded(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir),
        INSTALL_TIMEOUT,
    );
    match outcome {
        Ok(_) if installed(&dir) => Ok(()),
        Ok(output) => Err(format!(
            "npm ci did not install the pinned packages:\n{output}"
        )),
        Err(error) => Err(format!("npm ci failed: {error}")),
    }
}

/// Every dependency pinned in `package.json` is in `node_modules` at exactly that version.
fn installed(dir: &Path) -> bool {
    let read = |path: PathBuf| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| Json::parse(&text))
    };
    let Some(package) = read(dir.join("package.json")) else {
        return false;
    };
    let Some(Json::Obj(deps)) = package.get("dependencies") else {
        return false;
    };
    deps.iter().all(|(name, pin)| {
        read(dir.join("node_modules").join(name).join("package.json"))
            .is_some_and(|found| found.get("version").and_then(Json::as_str) == pin.as_str())
    })
}

/// Runs a command to completion within `timeout`; its combined output, or why it failed.
fn run_bounded(command: &mut Command, timeout: Duration) -> Result<String, String> {
    let finished = run_to_exit(command, timeout)?;
    let output = format!("{}{}", finished.stdout, finished.stderr);
    if finished.success() {
        Ok(output)
    } else {
        Err(format!("{}\n{output}", finished.status))
    }
}

/// Serialises `npm ci` across test binaries running at once: a directory in the temp dir,
/// created atomically, removed on drop. One left behind by a killed run is taken over when
/// it is older than the install timeout.
struct InstallLock {
    path: PathBuf,
}

impl InstallLock {
    fn acquire(dir: &Path) -> InstallLock {
        let name: String = dir
            .display()
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = std::env::temp_dir().join(format!("npm-ci-{name}.lock"));
        let stale = || {
            std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > INSTALL_TIMEOUT)
        };
        let taken = poll_until(
            Instant::now() + INSTALL_TIMEOUT,
            Duration::from_millis(200),
            || {
                if stale() {
                    let _ = std::fs::remove_dir(&path);
                }
                std::fs::create_dir(&path).ok()
            },
        );
        if taken.is_none() {
            // Held for the whole install timeout: its holder is hung, and the lock is ours now.
            let _ = std::fs::remove_dir(&path);
            let _ = std::fs::create_dir(&path);
        }
        InstallLock { path }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// What the line reader hands on.
enum Line {
    Event(Json),
    Exited,
}

/// JsSIP (`jssip_client.js`) as `sip:alice@registrar.test` on the WebSocket at `url`,
/// registering at `sip:registrar.test`, trusting the CA certificate `ca` (for WSS), with
/// `extra` options.
pub fn jssip_alice(url: &str, ca: Option<&Path>, extra: &[&str]) -> NodeScript {
    let mut args = vec![
        "--ws",
        url,
        "--uri",
        "sip:alice@registrar.test",
        "--registrar",
        "sip:registrar.test",
    ];
    args.extend_from_slice(extra);
    let ca = ca.map(|ca| ca.display().to_string());
    let envs: Vec<(&str, &str)> = ca
        .iter()
        .map(|ca| ("NODE_EXTRA_CA_CERTS", ca.as_str()))
        .collect();
    NodeScript::spawn("jssip_client.js", &args, &envs)
}

/// [`jssip_alice`] registering and sending `sip:bob@registrar.test` one MESSAGE ("hi"),
/// once it says the MESSAGE got its 200 (within 10 s, or the test fails).
pub fn jssip_alice_messages_bob(url: &str, ca: Option<&Path>) -> NodeScript {
    let extra = [
        "--message-to",
        "sip:bob@registrar.test",
        "--message-body",
        "hi",
    ];
    let mut jssip = jssip_alice(url, ca, &extra);
    let sent = jssip.wait_any(&["message_sent", "message_failed"], Duration::from_secs(10));
    assert_eq!(sent.event(), Some("message_sent"), "{}", jssip.transcript());
    jssip
}

/// A running Node script of `tests/node`, killed (by its PID) on drop.
pub struct NodeScript {
    name: String,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Line>,
    events: Vec<Json>,
    taken: HashSet<usize>,
    exited: bool,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl NodeScript {
    /// Starts `node tests/node/<script> <args>` with `envs` added to the environment.
    pub fn spawn(script: &str, args: &[&str], envs: &[(&str, &str)]) -> NodeScript {
        let mut child = Command::new("node")
            .arg(dir().join(script))
            .args(args)
            .envs(envs.iter().copied())
            .current_dir(dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stdout);
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
                if let Some(event) = Json::parse(&line) {
                    let _ = tx.send(Line::Event(event));
                }
            }
            let _ = tx.send(Line::Exited);
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        NodeScript {
            name: script.to_string(),
            child,
            stdin,
            lines,
            events: Vec::new(),
            taken: HashSet::new(),
            exited: false,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `line` to the script's standard input (for scripts that take commands there).
    pub fn send_line(&mut self, line: &str) {
        let sent = writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush());
        sent.unwrap_or_else(|e| {
            panic!(
                "{} takes no {line:?}: {e}\n{}",
                self.name,
                self.transcript()
            )
        });
    }

    /// Kills the script by its PID (as dropping it does) and reaps it.
    pub fn kill(&mut self) {
        // `Child::kill` signals exactly this PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the next event named `event` not returned before; panics with everything the
    /// script said when it does not come within `timeout`.
    pub fn wait_for(&mut self, event: &str, timeout: Duration) -> Json {
        self.wait_any(&[event], timeout)
    }

    /// Waits for the next event named one of `events` not returned before (so a test can wait
    /// for success or failure, whichever comes first).
    pub fn wait_any(&mut self, events: &[&str], timeout: Duration) -> Json {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.events.iter().enumerate().find(|(i, e)| {
                !self.taken.contains(i) && e.event().is_some_and(|name| events.contains(&name))
            });
            if let Some((i, event)) = found {
                let event = event.clone();
                self.taken.insert(i);
                return event;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.exited || left.is_zero() {
                panic!(
                    "{} did not report {events:?} within {timeout:?}{}\n{}",
                    self.name,
                    if self.exited { " (it exited)" } else { "" },
                    self.transcript()
                );
            }
            match self.lines.recv_timeout(left) {
                Ok(Line::Event(event)) => self.events.push(event),
                Ok(Line::Exited) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.exited = true;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Every event named `event` reported so far (without waiting).
    pub fn events(&mut self, event: &str) -> Vec<Json> {
        while let Ok(line) = self.lines.try_recv() {
            match line {
                Line::Event(e) => self.events.push(e),
                Line::Exited => self.exited = true,
            }
        }
        self.events
            .iter()
            .filter(|e| e.event() == Some(event))
            .cloned()
            .collect()
    }

    /// What the script printed so far, stdout then stderr, for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "--- {} stdout ---\n{}--- {} stderr ---\n{}",
            self.name,
            self.stdout.lock().unwrap(),
            self.name,
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for NodeScript {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JSON value: just enough of a parser for the scripts' one-line events and `package.json`.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parses one complete JSON text; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Json> {
        let mut parser = Parser {
            chars: text.chars().collect(),
            at: 0,
        };
        let value = parser.value()?;
        parser.skip_ws();
        (parser.at == parser.chars.len()).then_some(value)
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            // Event numbers are ports and status codes: small non-negative integers.
            Json::Num(n) if *n >= 0.0 && n.fract() == 0.0 => Some(*n as u64),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(items) => Some(items),
            _ => None,
        }
    }

    /// The string items of the array member `key`; panics naming the event when it is missing.
    pub fn strs(&self, key: &str) -> Vec<&str> {
        self.get(key)
            .and_then(Json::as_array)
            .unwrap_or_else(|| panic!("no array {key:?} in {self:?}"))
            .iter()
            .filter_map(Json::as_str)
            .collect()
    }

    /// The `event` member of a script's line.
    pub fn event(&self) -> Option<&str> {
        self.get("event").and_then(Json::as_str)
    }

    /// The string member `key`; panics naming the event when it is missing.
    pub fn str(&self, key: &str) -> &str {
        self.get(key)
            .and_then(Json::as_str)
            .unwrap_or_else(|| panic!("no string {key:?} in {self:?}"))
    }

    /// The numeric member `key`; panics naming the event when it is missing.
    pub fn num(&self, key: &str) -> u64 {
        self.get(key)
            .and_then(Json::as_u64)
            .unwrap_or_else(|| panic!("no number {key:?} in {self:?}"))
    }
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self
            .peek()
            .is_some_and(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
        {
            self.at += 1;
        }
    }

    fn eat(&mut self, word: &str) -> bool {
        let end = self.at + word.chars().count();
        if end <= self.chars.len() && self.chars[self.at..end].iter().copied().eq(word.chars()) {
            self.at = end;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Json> {
        self.skip_ws();
        match self.peek()? {
            '{' => self.object(),
            '[' => self.array(),
            '"' => self.string().map(Json::Str),
            't' => self.eat("true").then_some(Json::Bool(true)),
            'f' => self.eat("false").then_some(Json::Bool(false)),
            'n' => self.eat("null").then_some(Json::Null),
            _ => self.number(),
        }
    }

    fn object(&mut self) -> Option<Json> {
        let members = self.items('}', |parser| {
            parser.skip_ws();
            let key = parser.string()?;
            parser.skip_ws();
            if parser.next()? != ':' {
                return None;
            }
            Some((key, parser.value()?))
        })?;
        Some(Json::Obj(members))
    }

    fn array(&mut self) -> Option<Json> {
        self.items(']', Parser::value).map(Json::Arr)
    }

    /// The `,`-separated items of an object or array, from its opening character to `close`.
    fn items<T>(
        &mut self,
        close: char,
        mut item: impl FnMut(&mut Parser) -> Option<T>,
    ) -> Option<Vec<T>> {
        self.next(); // '{' or '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(close) {
            self.next();
            return Some(items);
        }
        loop {
            items.push(item(self)?);
            self.skip_ws();
            match self.next()? {
                ',' => continue,
                c if c == close => return Some(items),
                _ => return None,
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut n = 0;
        for _ in 0..4 {
            n = n * 16 + self.next()?.to_digit(16)?;
        }
        Some(n)
    }

    fn string(&mut self) -> Option<String> {
        if self.next()? != '"' {
            return None;
        }
        let mut out = String::new();
        loop {
            match self.next()? {
                '"' => return Some(out),
                '\\' => match self.next()? {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    '/' => out.push('/'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let high = self.hex4()?;
                        let code = if (0xD800..0xDC00).contains(&high) {
                            if !self.eat("\\u") {
                                return None;
                            }
                            let low = self.hex4()?;
                            0x10000 + ((high - 0xD800) << 10) + (low.checked_sub(0xDC00)?)
                        } else {
                            high
                        };
                        out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                    }
                    _ => return None,
                },
                c => out.push(c),
            }
        }
    }

    fn number(&mut self) -> Option<Json> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
        {
            self.at += 1;
        }
        let text: String = self.chars[start..self.at].iter().collect();
        text.parse().ok().map(Json::Num)
    }
}
