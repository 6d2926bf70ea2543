//! Keyboard input without blocking the session: whatever crossterm has
//! queued is read on each tick and mapped to the view's own [`Key`]s.

use std::{io, time::Duration};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::Key;

/// What happened at the terminal since the last tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Key(Key),
    Resize,
}

/// At most this many inputs per tick, so a paste cannot stall the session.
const MAX_PER_TICK: usize = 256;

/// Drains queued terminal events, never waiting.
pub fn poll() -> io::Result<Vec<Input>> {
    let mut out = Vec::new();
    while out.len() < MAX_PER_TICK && event::poll(Duration::ZERO)? {
        match event::read()? {
            Event::Key(k) => out.extend(map(k).map(Input::Key)),
            Event::Resize(..) => out.push(Input::Resize),
            _ => {}
        }
    }
    Ok(out)
}

/// In raw mode Ctrl-C is a key, not SIGINT: it maps to [`Key::CtrlC`].
pub fn map(k: KeyEvent) -> Option<Key> {
    if k.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    Some(match k.code {
        KeyCode::Char('c') if ctrl => Key::CtrlC,
        KeyCode::Char(_) if ctrl => return None,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keys() {
        let k = |code, m| map(KeyEvent::new(code, m));
        assert_eq!(
            k(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Some(Key::CtrlC)
        );
        assert_eq!(
            k(KeyCode::Char('c'), KeyModifiers::NONE),
            Some(Key::Char('c'))
        );
        assert_eq!(
            k(KeyCode::Char('?'), KeyModifiers::SHIFT),
            Some(Key::Char('?'))
        );
        assert_eq!(k(KeyCode::Char('l'), KeyModifiers::CONTROL), None);
        assert_eq!(k(KeyCode::Esc, KeyModifiers::NONE), Some(Key::Esc));
        assert_eq!(k(KeyCode::F(1), KeyModifiers::NONE), None);
        let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(map(release), None);
    }
}
