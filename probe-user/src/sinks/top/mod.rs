//! `netprobe top`: a live view of retransmits, handshakes and diagnoses.
//!
//! The session (trace.rs) feeds every event to a consumer here; the
//! consumer keeps an [`app::App`] (pure state, unit-tested) and either
//! draws it full-screen ([`view`], on a terminal held by [`terminal`]) or,
//! when stdout is not a terminal, prints a text block ([`plain`]) every
//! `--refresh`.

pub mod app;
pub mod input;
pub mod plain;
pub mod terminal;
pub mod view;

use std::{
    io::{self, IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use self::{
    app::{App, Config, KeyOutcome},
    input::Input,
    terminal::Tui,
};
use crate::{
    cli::TopArgs,
    model::event::{Event, EventBody},
    sinks::{Consumer, Flow},
    trace,
};

/// Stats (ring-buffer events and losses) at least this often: the
/// session's default of 10 s is too slow for a live view.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(mut args: TopArgs, tc_netns: Option<u32>) -> anyhow::Result<()> {
    args.common.stats_interval = args
        .common
        .stats_interval
        .min(args.refresh)
        .min(STATS_INTERVAL);
    let config = Config {
        handshake_timeout: args.common.handshake_timeout,
        ..Config::default()
    };
    let app = App::new(config);
    if io::stdout().is_terminal() {
        eprintln!("netprobe top: attaching probes...");
        let mut live = Live {
            app,
            refresh: args.refresh,
            tui: None,
            drawn: None,
            done: false,
        };
        trace::session(&args.common, tc_netns, &mut live).await
    } else {
        let mut plain = Plain {
            app,
            refresh: args.refresh,
            printed: Instant::now(),
            out: io::stdout(),
        };
        trace::session(&args.common, tc_netns, &mut plain).await
    }
}

/// The full-screen view. The terminal is taken on the first tick, once
/// the probes are attached, so load errors print on a normal screen.
struct Live {
    app: App,
    refresh: Duration,
    tui: Option<Tui>,
    drawn: Option<Instant>,
    /// Quit was asked: the terminal is already given back.
    done: bool,
}

impl Live {
    fn draw(&mut self) -> io::Result<()> {
        if let Some(tui) = &mut self.tui {
            tui.terminal.draw(|f| view::draw(f, &self.app))?;
            tui.trim_stderr();
        }
        self.drawn = Some(Instant::now());
        Ok(())
    }
}

impl Consumer for Live {
    fn event(&mut self, event: &Event) -> io::Result<Flow> {
        self.app.apply(event);
        Ok(if self.done {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }

    fn tick(&mut self, now: DateTime<Utc>) -> io::Result<Flow> {
        if self.done {
            return Ok(Flow::Stop);
        }
        if self.tui.is_none() {
            self.tui = Some(Tui::enter()?);
            self.drawn = None;
        }
        self.app.tick(now);
        let mut redraw = self.drawn.is_none_or(|t| t.elapsed() >= self.refresh);
        for input in input::poll()? {
            match input {
                Input::Resize => redraw = true,
                Input::Key(k) => match self.app.key(k) {
                    KeyOutcome::None => {}
                    KeyOutcome::Redraw => redraw = true,
                    KeyOutcome::Quit => {
                        // Give the terminal back now, not after detaching.
                        self.tui = None;
                        self.done = true;
                        return Ok(Flow::Stop);
                    }
                },
            }
        }
        if redraw {
            self.draw()?;
        }
        Ok(Flow::Continue)
    }
}

/// Plain text blocks on a pipe or file.
struct Plain {
    app: App,
    refresh: Duration,
    printed: Instant,
    out: io::Stdout,
}

impl Plain {
    fn print(&mut self) -> io::Result<()> {
        let mut out = self.out.lock();
        out.write_all(plain::summary(&self.app).as_bytes())?;
        out.flush()?;
        self.printed = Instant::now();
        Ok(())
    }
}

impl Consumer for Plain {
    fn event(&mut self, event: &Event) -> io::Result<Flow> {
        self.app.apply(event);
        // The session's last stats: one closing block with everything.
        if let EventBody::Stats(s) = &event.body
            && s.r#final
        {
            self.app.tick(Utc::now());
            self.print()?;
        }
        Ok(Flow::Continue)
    }

    fn tick(&mut self, now: DateTime<Utc>) -> io::Result<Flow> {
        self.app.tick(now);
        if self.printed.elapsed() >= self.refresh {
            self.print()?;
        }
        Ok(Flow::Continue)
    }
}
