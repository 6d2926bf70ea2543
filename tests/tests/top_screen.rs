//! `netprobe top` on a real terminal (tmux) and on a pipe, against a lab
//! flow whose peer starts dropping silently, so the kernel retransmits.
//!
//! Root only; one at a time (tracepoints see every namespace):
//!
//! ```text
//! NETPROBE_BIN=$PWD/target/release/netprobe \
//!     cargo test -p netprobe-tests --test top_screen -- --test-threads=1
//! ```
//!
//! With `NETPROBE_TOP_SCREEN=FILE` set, the 80x24 test also writes the
//! screen it captured to FILE (the README's picture of `top`).
//!
//! Tracepoints are global: other flows on the machine may show up too, so
//! the assertions look for this lab's flow by its addresses.

use netprobe_tests::{require_root, secs};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netprobe_tests::background::{Background, Stream};
use netprobe_tests::cmd::{self, Finished};
use netprobe_tests::netprobe::{READY_MARKER, binary};
use netprobe_tests::peers::{BlackHole, EchoServer, LineClient, tls_client};
use netprobe_tests::{Host, Lab, poll_until};
use probe_user::sinks::top::{
    app::{App, Config},
    terminal::Tui,
    view,
};

/// Loading and attaching takes a few seconds on 2 cores.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// RTO back-off from 200 ms: a handful of retransmits within seconds of
/// the drop, and a redraw every second.
const RETRANSMIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Keys are read every ~100 ms and the screen redrawn at once.
const KEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Quit, detach, exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
const PORT: u16 = 8000;

/// A private tmux server (its own socket, no config) with one session;
/// the server and everything in it is killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `command` runs in a `width`x`height` pane.
    fn start(width: u16, height: u16, command: &str) -> Tmux {
        static N: AtomicU32 = AtomicU32::new(0);
        let socket = format!(
            "np-top-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let tmux = Tmux { socket };
        let (w, h) = (width.to_string(), height.to_string());
        let done = tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &w,
            "-y",
            &h,
            command,
        ]);
        assert!(done.success(), "tmux did not start: {}", done.report());
        tmux
    }

    fn run(&self, args: &[&str]) -> Finished {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).args(args);
        cmd::run_bounded(&mut c, Duration::from_secs(10))
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"]).stdout()
    }

    /// A tmux format evaluated for the pane, e.g. `#{alternate_on}`.
    fn format(&self, f: &str) -> String {
        self.run(&["display-message", "-p", "-t", "top", f])
            .stdout()
            .trim()
            .to_string()
    }

    /// Key names as tmux spells them: `q`, `?`, `Escape`, `Enter`, `C-c`.
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        let done = self.run(&args);
        assert!(done.success(), "send-keys failed: {}", done.report());
    }

    /// Text typed as is.
    fn type_text(&self, text: &str) {
        let done = self.run(&["send-keys", "-t", "top", "-l", text]);
        assert!(done.success(), "send-keys failed: {}", done.report());
    }

    /// Polls the screen until `pred` holds; panics with `what`, the last
    /// screen and `context` at the deadline.
    fn wait_screen(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
        context: impl Fn() -> String,
    ) -> String {
        let mut last = String::new();
        poll_until(timeout, secs(0.2), || {
            last = self.screen();
            pred(&last).then(|| last.clone())
        })
        .unwrap_or_else(|| {
            panic!(
                "{what}: not on screen within {timeout:?}; last screen:\n{last}\n{}",
                context()
            )
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Closing the pane hangs up netprobe (SIGHUP); its links are fds.
        self.run(&["kill-server"]);
    }
}

/// Appended to a pane's command: its exit status and the line
/// discipline flags raw mode turns off, read on the terminal it handed
/// back, then a long sleep so the pane stays to be looked at.
const REPORT_TTY: &str = "; echo \"exited: $?\"; printf 'tty:'; stty -a | tr ' ;' '\\n\\n' | \
    grep -xE -e '-?(isig|icanon|echo)' | tr '\\n' ' '; echo; exec sleep 600";

/// `netprobe top args...` in a pane, then [`REPORT_TTY`].
fn pane_command(args: &[&str]) -> String {
    let mut argv = vec![binary().display().to_string(), "top".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let quoted: Vec<String> = argv.iter().map(|a| format!("'{a}'")).collect();
    format!("{}{REPORT_TTY}", quoted.join(" "))
}

/// After the program ended: it exited with `code`, the pane is alive,
/// back on the main screen with a visible cursor and a cooked line
/// discipline. Returns the screen.
fn assert_terminal_restored(tmux: &Tmux, code: i32) -> String {
    let screen = tmux.wait_screen(
        "exit status and tty flags",
        EXIT_TIMEOUT,
        |s| s.contains("tty:"),
        String::new,
    );
    assert!(
        screen.contains(&format!("exited: {code}")),
        "want exit status {code}:\n{screen}"
    );
    let flags = screen
        .lines()
        .find_map(|l| l.trim().strip_prefix("tty:"))
        .unwrap_or_default()
        .trim()
        .to_string();
    assert_eq!(
        flags, "isig icanon echo",
        "line discipline not restored:\n{screen}"
    );
    assert_eq!(
        tmux.format("#{pane_dead} #{alternate_on} #{cursor_flag}"),
        "0 0 1",
        "want pane alive, main screen, cursor shown:\n{screen}"
    );
    assert!(
        !screen.contains("Top flows"),
        "the view is still on screen:\n{screen}"
    );
    screen
}

/// The table row of `local` -> `server` and its retransmit count (the
/// first plain number after the destination).
fn flow_row(screen: &str, local: SocketAddr, server: SocketAddr) -> Option<(String, u64)> {
    let (l, s) = (local.to_string(), server.to_string());
    screen.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == s)?;
        if !words[..at].contains(&l.as_str()) {
            return None;
        }
        let count = words[at + 1..].iter().find_map(|w| w.parse().ok())?;
        Some((line.to_string(), count))
    })
}

/// Client and server namespaces, an echo flow, and the peer going silent.
struct Incident {
    lab: Lab,
    cli: Host,
    srv: Host,
    server: SocketAddr,
    _echo: EchoServer,
    client: Option<LineClient>,
}

impl Incident {
    fn new(label: &str) -> Incident {
        let mut lab = Lab::new(label);
        let (cli, srv) = lab.pair();
        let server = SocketAddr::new(srv.ipv4.into(), PORT);
        let _echo = EchoServer::start(&srv, srv.ipv4.into(), PORT);
        Incident {
            lab,
            cli,
            srv,
            server,
            _echo,
            client: None,
        }
    }

    /// Connects, checks echoes flow, then drops the port on the server
    /// side. Returns the client's address.
    fn start_dropping(&mut self) -> SocketAddr {
        let client = LineClient::start(&self.cli, self.server, secs(0.1));
        assert!(
            client.wait_echoes(3, secs(5.0)),
            "echoes flow before the drop"
        );
        let local = client.local_addr();
        self.client = Some(client);
        self.srv.nft().drop_tcp_port(PORT);
        local
    }

    fn retrans(&self) -> String {
        format!(
            "kernel RetransSegs in the client namespace: {}",
            self.cli.tcp_retrans_segs()
        )
    }
}

#[test]
fn top_in_tmux_shows_the_retransmitting_flow_help_and_quits_cleanly() {
    require_root();
    let mut inc = Incident::new("top-tmux");
    let netns = inc.cli.name().to_string();
    let tmux = Tmux::start(
        100,
        30,
        &pane_command(&["--netns", &netns, "--port", &PORT.to_string()]),
    );
    tmux.wait_screen(
        "the view",
        READY_TIMEOUT,
        |s| s.contains("Top flows") && s.contains("netprobe top"),
        String::new,
    );
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "1",
        "view on the alternate screen"
    );

    let local = inc.start_dropping();
    let server = inc.server;
    // Only this lab's flows: other tests' retransmits may crowd the table.
    tmux.keys(&["/"]);
    tmux.type_text(&inc.srv.ipv4.to_string());
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_screen(
        "the flow with retransmits",
        RETRANSMIT_TIMEOUT,
        |s| flow_row(s, local, server).is_some_and(|(_, n)| n > 0),
        || inc.retrans(),
    );
    let (row, count) = flow_row(&screen, local, server).unwrap();
    assert!(count > 0);
    assert!(row.contains("ESTAB"), "state of the flow: {row}");
    assert!(
        screen.contains(&format!("filter: address {}", inc.srv.ipv4)),
        "{screen}"
    );
    // The count keeps growing while the peer stays silent.
    tmux.wait_screen(
        "a growing retransmit count",
        RETRANSMIT_TIMEOUT,
        |s| flow_row(s, local, server).is_some_and(|(_, n)| n > count),
        || inc.retrans(),
    );
    assert!(inc.lab.contains(local.ip()));

    // A filter nothing matches, then Esc shows the flow again.
    tmux.keys(&["/"]);
    tmux.type_text("1");
    tmux.keys(&["Enter"]);
    tmux.wait_screen(
        "an empty table",
        KEY_TIMEOUT,
        |s| s.contains("nothing matches the filter"),
        String::new,
    );
    tmux.keys(&["Escape"]);
    tmux.wait_screen(
        "the cleared filter",
        KEY_TIMEOUT,
        |s| !s.contains("filter:") && !s.contains("nothing matches"),
        String::new,
    );

    // Pause freezes, p resumes.
    tmux.keys(&["p"]);
    tmux.wait_screen("PAUSED", KEY_TIMEOUT, |s| s.contains("PAUSED"), String::new);
    tmux.keys(&["p"]);
    tmux.wait_screen(
        "resumed",
        KEY_TIMEOUT,
        |s| !s.contains("PAUSED"),
        String::new,
    );

    tmux.keys(&["?"]);
    let help = tmux.wait_screen(
        "the help",
        KEY_TIMEOUT,
        |s| s.contains("netprobe top help"),
        String::new,
    );
    for want in ["cycle sort", "filter: port", "pause", "quit (also Ctrl-C)"] {
        assert!(
            help.contains(want),
            "{want:?} missing from the help:\n{help}"
        );
    }

    tmux.keys(&["q"]);
    assert_terminal_restored(&tmux, 0);
}

#[test]
fn top_fits_80x24_and_ctrl_c_restores_the_terminal() {
    require_root();
    let mut inc = Incident::new("top-80x24");
    let netns = inc.cli.name().to_string();
    // A server that accepts and never answers: an unanswered handshake.
    let _hole = BlackHole::start(&inc.srv, inc.srv.ipv4.into(), 443);
    let tmux = Tmux::start(
        80,
        24,
        &pane_command(&[
            "--netns",
            &netns,
            "--port",
            &PORT.to_string(),
            "--port",
            "443",
        ]),
    );
    tmux.wait_screen(
        "the view",
        READY_TIMEOUT,
        |s| s.contains("Top flows"),
        String::new,
    );
    let local = inc.start_dropping();
    let server = inc.server;
    let hello = tls_client(
        &inc.cli,
        inc.srv.ipv4.into(),
        443,
        Some("api.lab.test"),
        secs(1.0),
    );
    assert!(hello.tcp_connected, "{}", hello.report);
    let tls_target = format!("{}:443", inc.srv.ipv4);
    // Wait for the handshake to pass the timeout and for a diagnosis too:
    // this screen is the README's.
    let screen = tmux.wait_screen(
        "flow, unanswered handshake and diagnosis",
        RETRANSMIT_TIMEOUT,
        |s| {
            flow_row(s, local, server).is_some_and(|(_, n)| n >= 3)
                && s.contains(&tls_target)
                && !s.contains(" 0 unanswered")
                && !s.contains("none yet")
        },
        || inc.retrans(),
    );
    assert_eq!(screen.lines().count(), 24, "{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= 80));
    for want in [
        "netprobe top",
        "events",
        "lost",
        "Retransmits/s",
        "Retransmit gaps",
        "Flows by retransmit count",
        "Top flows",
        "TLS:",
        "Latest diagnoses",
        "q  quit",
    ] {
        assert!(
            screen.contains(want),
            "{want:?} missing at 80x24:\n{screen}"
        );
    }
    if let Some(path) = std::env::var_os("NETPROBE_TOP_SCREEN") {
        std::fs::write(&path, &screen)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.to_string_lossy()));
    }

    // In raw mode Ctrl-C is a key, not a signal: it must still quit.
    tmux.keys(&["C-c"]);
    assert_terminal_restored(&tmux, 0);
}

#[test]
fn top_on_a_pipe_prints_plain_summaries() {
    require_root();
    let mut inc = Incident::new("top-pipe");
    let mut c = Command::new(binary());
    c.args([
        "top",
        "--netns",
        inc.cli.name(),
        "--port",
        &PORT.to_string(),
        "--refresh",
        "1s",
    ]);
    // stdout is a pipe here: no terminal, no escape sequences.
    let mut top = Background::spawn(c, "netprobe top | (pipe)");
    if top
        .wait_line(Stream::Stderr, |l| l.contains(READY_MARKER), READY_TIMEOUT)
        .is_none()
    {
        panic!("netprobe top not ready: {}", top.report());
    }
    assert!(
        top.wait_line(
            Stream::Stdout,
            |l| l.starts_with("== netprobe top "),
            secs(5.0)
        )
        .is_some(),
        "no summary block within 5 s: {}",
        top.report()
    );
    let local = inc.start_dropping();
    let server = inc.server;
    let row = top.wait_line(
        Stream::Stdout,
        |l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() > 3
                && w[0].parse::<u64>().is_ok_and(|n| n > 0)
                && w.contains(&local.to_string().as_str())
                && w.contains(&server.to_string().as_str())
        },
        RETRANSMIT_TIMEOUT,
    );
    assert!(
        row.is_some(),
        "no summary row for {local} -> {server} with retransmits; {}\n{}",
        inc.retrans(),
        top.report()
    );
    top.signal(libc::SIGINT);
    let status = top.wait_exit(EXIT_TIMEOUT);
    let report = top.report();
    assert!(
        status.is_some_and(|s| s.success()),
        "no clean exit on SIGINT: {report}"
    );
    let out = top.stdout();
    assert!(
        !out.contains('\x1b'),
        "escape sequences on a pipe: {report}"
    );
    for want in [
        "ring buffer: ",
        "retransmit gaps: <140ms",
        "flows by retransmit count: ",
        "top flows by retransmits:",
        "TLS handshakes: ",
        "diagnoses",
    ] {
        assert!(out.contains(want), "{want:?} missing: {report}");
    }
    assert!(
        out.matches("== netprobe top ").count() >= 3,
        "one block per second: {report}"
    );
}

/// Set for the child run of [`tui_panic_child`].
const PANIC_CHILD_ENV: &str = "NETPROBE_TOP_PANIC_CHILD";

/// Not a test on its own: run by [`a_panic_inside_the_view_restores_the_terminal`]
/// in a tmux pane, it takes the terminal with `top`'s own guard, draws the
/// view, writes to stderr and panics. Returns at once otherwise.
#[test]
fn tui_panic_child() {
    if std::env::var_os(PANIC_CHILD_ENV).is_none() {
        return;
    }
    let app = App::new(Config::default());
    let mut tui = Tui::enter().expect("taking the terminal");
    tui.terminal.draw(|f| view::draw(f, &app)).expect("drawing");
    eprintln!("a warning written while the view was up");
    std::thread::sleep(secs(1.0));
    panic!("deliberate panic inside the view");
}

#[test]
fn a_panic_inside_the_view_restores_the_terminal() {
    require_root();
    let exe = std::env::current_exe().expect("test binary path");
    let command = format!(
        "RUST_BACKTRACE=0 {PANIC_CHILD_ENV}=1 '{}' --exact tui_panic_child --nocapture --test-threads=1{REPORT_TTY}",
        exe.display()
    );
    let tmux = Tmux::start(80, 24, &command);
    tmux.wait_screen(
        "the view",
        KEY_TIMEOUT,
        |s| s.contains("Top flows"),
        String::new,
    );
    // libtest reports the panicking test with status 101.
    let screen = assert_terminal_restored(&tmux, 101);
    assert!(
        screen.contains("deliberate panic inside the view"),
        "panic message not shown:\n{screen}"
    );
    assert!(
        screen.contains("a warning written while the view was up"),
        "stderr written under the view is shown after it:\n{screen}"
    );
}
