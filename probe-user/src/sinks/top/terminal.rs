//! The terminal while `top` owns it: raw mode, alternate screen, hidden
//! cursor, and stderr parked in a memory file so log lines cannot scribble
//! over the view. [`Tui`] puts everything back when dropped (quit, Ctrl-C,
//! SIGTERM, an error) and a panic hook does the same before the panic
//! message is printed, so the message lands on a usable terminal.

use std::{
    io::{self, Read as _, Seek as _, Stdout, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{Mutex, Once, OnceLock},
    thread::ThreadId,
};

use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor, execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
};

/// Captured stderr beyond this is dropped (with a note), so a chatty
/// warning loop cannot grow memory for hours.
const STDERR_CAP: u64 = 1 << 20;

/// What must be undone; `None` when the terminal is ours no more.
struct Taken {
    /// The real stderr, while fd 2 points at `capture`.
    saved_stderr: Option<OwnedFd>,
    capture: Option<std::fs::File>,
    dropped_bytes: u64,
}

static TAKEN: Mutex<Option<Taken>> = Mutex::new(None);
/// The thread drawing the view: only its panics end the view (a panic in
/// another thread is caught by the runtime; its message goes to the
/// captured stderr and is shown at exit).
static TUI_THREAD: OnceLock<ThreadId> = OnceLock::new();
static HOOK: Once = Once::new();

pub struct Tui {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Tui {
    /// Takes the terminal. On error, whatever was already changed is undone.
    pub fn enter() -> io::Result<Tui> {
        let _ = TUI_THREAD.set(std::thread::current().id());
        install_panic_hook();
        terminal::enable_raw_mode()?;
        *lock() = Some(Taken {
            saved_stderr: None,
            capture: None,
            dropped_bytes: 0,
        });
        let entered = (|| {
            execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
            capture_stderr()?;
            let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
            terminal.clear()?;
            Ok(Tui { terminal })
        })();
        if entered.is_err() {
            restore();
        }
        entered
    }

    /// Bounds the captured stderr; call now and then.
    pub fn trim_stderr(&self) {
        if let Some(Taken {
            capture: Some(file),
            dropped_bytes,
            ..
        }) = lock().as_mut()
            && let Ok(meta) = file.metadata()
            && meta.len() > STDERR_CAP
        {
            // fd 2 shares this file offset (dup), so rewinding here makes
            // the next write start at 0 too.
            if file.set_len(0).is_ok() && file.rewind().is_ok() {
                *dropped_bytes += meta.len();
            }
        }
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        restore();
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<Taken>> {
    TAKEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Points fd 2 at an anonymous memory file, when stderr is this terminal
/// (a stderr redirected elsewhere cannot disturb the screen).
fn capture_stderr() -> io::Result<()> {
    use std::io::IsTerminal as _;
    if !io::stderr().is_terminal() {
        return Ok(());
    }
    // SAFETY: plain syscalls on fds we own or on fd 2; results checked.
    unsafe {
        let mem = libc::memfd_create(c"netprobe-top-stderr".as_ptr(), libc::MFD_CLOEXEC);
        if mem < 0 {
            return Err(io::Error::last_os_error());
        }
        let capture = std::fs::File::from_raw_fd(mem);
        let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
        if saved < 0 {
            return Err(io::Error::last_os_error());
        }
        let saved = OwnedFd::from_raw_fd(saved);
        if libc::dup2(capture.as_raw_fd(), 2) < 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(t) = lock().as_mut() {
            t.saved_stderr = Some(saved);
            t.capture = Some(capture);
        }
    }
    Ok(())
}

/// Undoes everything [`Tui::enter`] did; idempotent, never fails (a
/// broken terminal cannot be helped further), then replays what was
/// written to stderr meanwhile.
pub fn restore() {
    let Some(taken) = lock().take() else { return };
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    let _ = io::stdout().flush();
    if let Some(saved) = taken.saved_stderr {
        // SAFETY: dup2 of an fd we own onto fd 2.
        unsafe { libc::dup2(saved.as_raw_fd(), 2) };
    }
    if let Some(mut file) = taken.capture {
        let mut text = Vec::new();
        if file.rewind().is_ok() && file.read_to_end(&mut text).is_ok() {
            let mut err = io::stderr().lock();
            if taken.dropped_bytes > 0 {
                let _ = writeln!(
                    err,
                    "netprobe: {} bytes of earlier messages dropped",
                    taken.dropped_bytes
                );
            }
            let _ = err.write_all(&text);
        }
    }
}

fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if TUI_THREAD.get() == Some(&std::thread::current().id()) {
                restore();
            }
            previous(info);
        }));
    });
}
