//! Waiting for what has no event to wait on, and programs run to their exit: every wait has a
//! deadline, and a program that overstays it is killed by its PID.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often [`wait_for_exit`] looks at a child: short next to any test's step, long next to a
/// system call.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// Asks `ready` every `every` until it gives a value or `deadline` passes, asking once more at
/// the deadline. For states that no event announces: a child's exit, a socket another process
/// binds, a counter on another thread.
pub fn poll_until<T>(
    deadline: Instant,
    every: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(value) = ready() {
            return Some(value);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(every.min(left));
    }
}

/// Waits until `child` exits or `deadline` passes: its exit status, or `None` with the child
/// still running (the caller decides whether to kill it).
pub fn wait_for_exit(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    poll_until(deadline, EXIT_POLL, || {
        child.try_wait().expect("cannot wait for a child process")
    })
}

/// A program that ran to its exit: how it ended and what it wrote.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code; panics when a signal ended the program, which no test expects.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal ({})\n{}", self.status, self.stderr))
    }
}

/// Runs `command` with stdin closed and its output captured until it exits, at most `timeout`;
/// one that takes longer is killed and reported as the error.
pub fn run_to_exit(command: &mut Command, timeout: Duration) -> Result<Finished, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {:?}: {error}", command.get_program()))?;
    // Read on threads, so a child that fills one pipe while the other is read does not stall.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let Some(status) = wait_for_exit(&mut child, Instant::now() + timeout) else {
        // Best effort: the timeout is what the caller reports.
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "{:?} did not exit within {timeout:?}",
            command.get_program()
        ));
    };
    Ok(Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Everything a pipe delivers until it closes, read on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error leaves what was read; the assertions on the text will show it.
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
