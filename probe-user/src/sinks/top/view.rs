//! Drawing `netprobe top` from an [`App`]: layout and widgets only, no
//! state. Fits 80x24; the flows table and the bottom panes take any extra
//! height, the address columns any extra width.

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize as _},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, Wrap},
};

use super::app::{App, Group, INTERVAL_LABELS, PER_FLOW_LABELS, SortKey};

/// Rows taken by everything but the flows table and the bottom panes.
const FIXED_ROWS: u16 = 1 + 3 + 9 + 1;

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let rest = area.height.saturating_sub(FIXED_ROWS);
    let bottom = (rest / 3).clamp(4, 12);
    let [header, spark, hists, flows, panes, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(9),
        Constraint::Min(3),
        Constraint::Length(bottom),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(header_line(app), header);
    draw_sparkline(frame, app, spark);
    let [left, right] =
        Layout::horizontal([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(hists);
    let data = app.data();
    draw_histogram(
        frame,
        left,
        " Retransmit gaps (nearest RTO step) ",
        &INTERVAL_LABELS,
        &data.intervals,
    );
    draw_histogram(
        frame,
        right,
        " Flows by retransmit count ",
        &PER_FLOW_LABELS,
        &app.per_flow_histogram(),
    );
    draw_flows(frame, app, flows);
    let [tls, diag] =
        Layout::horizontal([Constraint::Percentage(42), Constraint::Percentage(58)]).areas(panes);
    draw_handshakes(frame, app, tls);
    draw_diagnoses(frame, app, diag);
    frame.render_widget(footer_line(app), footer);
    if app.help() {
        draw_help(frame, area);
    }
}

fn header_line(app: &App) -> Paragraph<'static> {
    let d = app.data();
    let mut spans = vec![Span::styled(
        " netprobe top ",
        Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD),
    )];
    if app.paused() {
        spans.push(Span::styled(
            " PAUSED ",
            Style::new().fg(Color::Black).bg(Color::Yellow).bold(),
        ));
    }
    match &d.stats {
        Some(s) => {
            let rate = d
                .events_per_sec
                .map(|r| format!(" ({}/s)", compact(r as u64)))
                .unwrap_or_default();
            spans.push(Span::raw(format!(" events {}{rate} ", compact(s.events))));
            let lost = Span::raw(format!("lost {} ", compact(s.lost)));
            spans.push(if s.lost > 0 { lost.red().bold() } else { lost });
        }
        None => spans.push(Span::raw(" events - lost - ").dim()),
    }
    spans.push(Span::raw(format!(
        "│ flows {} │ retransmits {}",
        d.flows.len(),
        compact(d.retransmits)
    )));
    if d.evicted > 0 {
        spans.push(Span::raw(format!(" ({} old flows dropped)", compact(d.evicted))).dim());
    }
    Paragraph::new(Line::from(spans))
}

fn draw_sparkline(frame: &mut Frame, app: &App, area: Rect) {
    let block = Block::new().borders(Borders::TOP);
    let inner = block.inner(area);
    let (series, per_bin) = app.rate_series(inner.width as usize);
    let peak = series.iter().copied().max().unwrap_or(0);
    let minutes = app.config().history_secs / 60;
    let title = format!(
        " Retransmits/s · last {minutes} min, {per_bin} s/column · peak {peak}/s · last 10 s: {} ",
        app.recent_retransmits(10)
    );
    frame.render_widget(block.title(title), area);
    // Right-aligned: the newest second is always at the right edge.
    let width = (series.len() as u16).min(inner.width);
    let spark_area = Rect {
        x: inner.right() - width,
        width,
        ..inner
    };
    frame.render_widget(
        Sparkline::default()
            .data(&series)
            .style(Style::new().fg(Color::Yellow)),
        spark_area,
    );
}

/// One line per bucket: label, bar scaled to the largest count, count.
pub fn bar_lines(labels: &[&str], counts: &[u64], width: u16) -> Vec<Line<'static>> {
    let max = counts.iter().copied().max().unwrap_or(0);
    let label_w = labels.iter().map(|l| l.len()).max().unwrap_or(0);
    let count_w = max.to_string().len();
    let bar_w = (width as usize).saturating_sub(label_w + count_w + 2);
    labels
        .iter()
        .zip(counts)
        .map(|(label, &n)| {
            let len = if max == 0 || n == 0 {
                0
            } else {
                ((n * bar_w as u64).div_ceil(max) as usize)
                    .max(1)
                    .min(bar_w)
            };
            Line::from(vec![
                Span::raw(format!("{label:>label_w$} ")),
                Span::styled("█".repeat(len), Style::new().fg(Color::Cyan)),
                Span::raw(format!("{} {n:>count_w$}", " ".repeat(bar_w - len))),
            ])
        })
        .collect()
}

fn draw_histogram(frame: &mut Frame, area: Rect, title: &str, labels: &[&str], counts: &[u64]) {
    let block = Block::new().borders(Borders::TOP).title(title.to_string());
    let lines = bar_lines(labels, counts, block.inner(area).width.saturating_sub(1));
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_flows(frame: &mut Frame, app: &App, area: Rect) {
    let rows = app.rows();
    let d = app.data();
    let total = match app.group() {
        Group::Flows => d.flows.len(),
        Group::Destinations => d
            .flows
            .values()
            .map(|f| f.flow.dst)
            .collect::<std::collections::HashSet<_>>()
            .len(),
    };
    let what = match app.group() {
        Group::Flows => "flows",
        Group::Destinations => "destinations",
    };
    let mut title = format!(" Top {what} · sort: {} ", app.sort().name());
    if let Some(f) = app.filter() {
        title.push_str(&format!("· filter: {} ", f.describe()));
    }
    title.push_str(&format!("· {} of {total} ", rows.len()));
    let block = Block::new().borders(Borders::TOP).title(title);
    if rows.is_empty() {
        let text = if total == 0 {
            "no retransmits seen yet"
        } else {
            "nothing matches the filter (Esc clears it)"
        };
        frame.render_widget(Paragraph::new(format!(" {text}")).dim().block(block), area);
        return;
    }
    // The sort column is highlighted (the title names it too).
    let sorted = |name: &'static str, key: SortKey| {
        let cell = Cell::from(name);
        if app.sort() == key {
            cell.reversed()
        } else {
            cell
        }
    };
    let first = match app.group() {
        Group::Flows => sorted("SRC", SortKey::Source),
        Group::Destinations => Cell::from("FLOWS"),
    };
    let header = Row::new(vec![
        first,
        sorted("DST", SortKey::Destination),
        sorted("STATE", SortKey::State),
        sorted("RETX", SortKey::Retransmits),
        sorted("LAST", SortKey::Recent),
        Cell::from("NAT TARGET"),
        Cell::from("PROC"),
    ])
    .style(Style::new().bold().underlined());
    let now = d.now.unwrap_or_else(Utc::now);
    let visible: Vec<[String; 7]> = rows
        .iter()
        .take(area.height as usize)
        .map(|r| {
            [
                match r.src {
                    Some(src) => src.to_string(),
                    None => r.flows.to_string(),
                },
                r.dst.to_string(),
                short_state(&r.state),
                r.retransmits.to_string(),
                age(now, r.last),
                addr_or_dash(r.nat),
                r.process.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let widths = column_widths(&visible, area.width);
    let lines = visible.into_iter().map(|cells| {
        Row::new(cells.into_iter().enumerate().map(|(i, c)| {
            if i == 3 {
                Cell::from(c).bold()
            } else {
                Cell::from(c)
            }
        }))
    });
    frame.render_widget(Table::new(lines, widths).header(header).block(block), area);
}

/// Table columns: fixed ones for state, count, age and process; the
/// three address columns as wide as their widest visible entry when that
/// fits (a NAT column of dashes stays narrow), else sharing the rest in
/// proportion to what they need.
fn column_widths(rows: &[[String; 7]], width: u16) -> [Constraint; 7] {
    const FIXED: [(usize, u16); 4] = [(2, 10), (3, 5), (4, 4), (6, 4)];
    const HEADERS: [&str; 3] = ["SRC", "DST", "NAT TARGET"];
    let need: Vec<u16> = [0, 1, 5]
        .iter()
        .zip(HEADERS)
        .map(|(&col, header)| {
            rows.iter()
                .map(|r| r[col].chars().count())
                .chain([header.len()])
                .max()
                .unwrap_or(0) as u16
        })
        .collect();
    let fixed: u16 = FIXED.iter().map(|(_, w)| w).sum::<u16>() + 6;
    let fits = need.iter().sum::<u16>() + fixed <= width;
    let mut out = [Constraint::Length(0); 7];
    for (col, w) in FIXED {
        out[col] = Constraint::Length(w);
    }
    for (col, n) in [0, 1, 5].into_iter().zip(need) {
        out[col] = if fits {
            Constraint::Min(n)
        } else {
            Constraint::Fill(n)
        };
    }
    out
}

fn draw_handshakes(frame: &mut Frame, app: &App, area: Rect) {
    let (pending, unanswered) = app.handshake_counts();
    let title = format!(" TLS: {pending} pending, {unanswered} unanswered ");
    let block = Block::new()
        .borders(Borders::TOP | Borders::RIGHT)
        .title(title);
    let d = app.data();
    let now = d.now.unwrap_or_else(Utc::now);
    let mut hs = app.handshakes();
    // Unanswered first: they are the symptom.
    hs.sort_by_key(|h| !h.unanswered);
    let mut lines: Vec<Line> = hs
        .iter()
        .map(|h| {
            let mark = if h.unanswered {
                Span::raw("! ").red().bold()
            } else {
                Span::raw("… ").yellow()
            };
            let sni = h
                .sni
                .as_deref()
                .map(|s| format!(" {s}"))
                .unwrap_or_default();
            Line::from(vec![
                mark,
                // Destination and SNI first: the client port matters least.
                Span::raw(format!(
                    "{:>4} {}{sni} ← {}",
                    age(now, h.since),
                    h.flow.dst,
                    h.flow.src
                )),
            ])
        })
        .collect();
    if lines.is_empty() {
        lines.push(Line::raw(format!(" none waiting · {} answered", d.answered)).dim());
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_diagnoses(frame: &mut Frame, app: &App, area: Rect) {
    let block = Block::new()
        .borders(Borders::TOP)
        .title(" Latest diagnoses ");
    let mut lines = Vec::new();
    for d in app.diagnoses() {
        lines.push(Line::from(vec![
            Span::raw(d.time.format("%H:%M:%S ").to_string()).dim(),
            Span::raw(d.cause.clone()).red().bold(),
            Span::raw(format!(" ({})", d.symptom)).dim(),
        ]));
        // The summary names the flow.
        lines.push(Line::raw(format!("  {}", d.summary)));
        if let Some(fix) = &d.fix {
            lines.push(Line::from(vec![
                Span::raw("  fix: ").green().bold(),
                Span::raw(fix.clone()),
            ]));
        }
    }
    if lines.is_empty() {
        lines.push(Line::raw(" none yet").dim());
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block),
        area,
    );
}

fn footer_line(app: &App) -> Paragraph<'static> {
    let line = match app.editing() {
        Some(text) => Line::from(vec![
            Span::raw(" filter: ").bold(),
            Span::raw(format!("{text}▏")),
            Span::raw("  port, address or ip:port · Enter apply · Esc clear").dim(),
        ]),
        None => {
            let mut spans = Vec::new();
            for (key, what) in [
                ("q", "quit"),
                ("?", "help"),
                ("s", "sort"),
                ("d", "flows/dests"),
                ("/", "filter"),
                ("p", "pause"),
            ] {
                spans.push(Span::raw(format!(" {key} ")).reversed());
                spans.push(Span::raw(format!(" {what} ")));
            }
            Line::from(spans)
        }
    };
    Paragraph::new(line)
}

pub const HELP: &[(&str, &str)] = &[
    (
        "s",
        "cycle sort: retransmits, last seen, source, destination, state",
    ),
    ("d", "flows or destinations (flows summed per destination)"),
    (
        "/",
        "filter: port (8000), address (10.0.0.2), ip:port; Enter; Esc clears",
    ),
    (
        "p",
        "pause the display (events are still counted); p resumes",
    ),
    ("?", "this help (? or Esc closes it)"),
    ("q", "quit (also Ctrl-C)"),
];

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = area.width.saturating_sub(4).min(84);
    let height = area.height.saturating_sub(2).min(16);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let mut lines = vec![Line::raw("Keys").bold()];
    for (key, what) in HELP {
        lines.push(Line::from(vec![
            Span::raw(format!(" {key:<3}")).bold(),
            Span::raw(*what),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::raw("Columns").bold());
    lines.push(Line::raw(
        " NAT TARGET: where conntrack sends the flow, once a snapshot told it",
    ));
    lines.push(Line::raw(
        " PROC: owning pod (namespace/name) and process when known (- : not reported)",
    ));
    lines.push(Line::raw(
        " Gaps: time between consecutive retransmits of one flow",
    ));
    frame.render_widget(Clear, rect);
    let block = Block::bordered().title(" netprobe top help ");
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block),
        rect,
    );
}

/// TCP states as `ss` abbreviates them, so the column stays narrow.
pub fn short_state(state: &str) -> String {
    match state {
        "ESTABLISHED" => "ESTAB".into(),
        "NEW_SYN_RECV" => "SYN-RECV".into(),
        "FIN_WAIT1" => "FIN-WAIT-1".into(),
        "FIN_WAIT2" => "FIN-WAIT-2".into(),
        s => s.replace('_', "-"),
    }
}

/// Time since `then`, in at most five characters: 0.4s, 12s, 3m, 5h, 2d.
pub fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let ms = (now - then).num_milliseconds().max(0);
    match ms {
        0..10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        10_000..120_000 => format!("{}s", ms / 1000),
        120_000..7_200_000 => format!("{}m", ms / 60_000),
        7_200_000..172_800_000 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

/// 999, 1.2k, 34k, 5.6M: counters stay short in the header.
pub fn compact(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..1_000_000 => format!("{}k", n / 1000),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

pub fn addr_or_dash(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "-".into(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::sinks::top::app::{
        Config, Key,
        tests::{diagnosis, hello, retx, stats, t},
    };

    fn screen(app: &App, w: u16, h: u16) -> String {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        term.draw(|f| draw(f, app)).unwrap();
        let buf = term.backend().buffer();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn busy_app() -> App {
        let mut app = App::new(Config::default());
        app.tick(t(0));
        app.apply(&stats(0, 1000, 0));
        for (ms, n) in [(0, 1), (200, 2), (600, 3), (1400, 4), (3000, 5)] {
            app.apply(&retx(ms, "10.200.0.1:40000", "10.200.0.2:8000", n));
        }
        app.apply(&retx(100, "10.200.0.1:40001", "10.200.0.3:443", 1));
        app.apply(&hello(500, "10.200.0.1:40002", "10.200.0.3:443"));
        app.apply(&diagnosis(
            3100,
            "10.200.0.1:40000",
            "10.200.0.2:8000",
            "endpoint_unreachable",
        ));
        app.apply(&stats(2000, 1200, 3));
        app.tick(t(4000));
        app
    }

    #[test]
    fn fits_80x24_with_every_section() {
        let s = screen(&busy_app(), 80, 24);
        for want in [
            "netprobe top",
            "events 1200 (100/s) lost 3",
            "Retransmits/s",
            "Retransmit gaps",
            "Flows by retransmit count",
            "Top flows",
            "10.200.0.1:40000",
            "10.200.0.2:8000",
            "ESTAB",
            "TLS: 0 pending, 1 unanswered",
            "endpoint_unreachable",
            "q  quit",
        ] {
            assert!(s.contains(want), "{want:?} missing from\n{s}");
        }
        assert_eq!(s.lines().count(), 24);
        // The retransmit count of the busiest flow, first row of the table.
        let row = s
            .lines()
            .find(|l| l.contains("10.200.0.1:40000") && l.contains("ESTAB"))
            .unwrap();
        assert!(row.split_whitespace().any(|w| w == "5"), "{row}");
    }

    #[test]
    fn grows_with_the_terminal() {
        let s = screen(&busy_app(), 160, 50);
        assert!(s.contains("conntrack -D"), "{s}");
        assert!(s.contains("10.200.0.1:40001"));
    }

    #[test]
    fn help_and_prompt_and_pause_show() {
        let mut app = busy_app();
        app.key(Key::Char('?'));
        let s = screen(&app, 80, 24);
        assert!(
            s.contains("netprobe top help") && s.contains("cycle sort"),
            "{s}"
        );
        app.key(Key::Char('?'));
        app.key(Key::Char('/'));
        app.key(Key::Char('9'));
        assert!(screen(&app, 80, 24).contains("filter: 9"));
        app.key(Key::Enter);
        app.key(Key::Char('p'));
        let s = screen(&app, 80, 24);
        assert!(
            s.contains("PAUSED") && s.contains("nothing matches the filter"),
            "{s}"
        );
    }

    #[test]
    fn tiny_terminal_does_not_panic() {
        let app = busy_app();
        for (w, h) in [(1, 1), (10, 5), (40, 12), (79, 23)] {
            screen(&app, w, h);
        }
    }

    #[test]
    fn address_columns_take_what_they_need() {
        let row = |src: &str, dst: &str, nat: &str| {
            [src, dst, "ESTAB", "5", "0.4s", nat, "-"].map(String::from)
        };
        let w = column_widths(&[row("10.244.12.123:54321", "10.211.250.10:8000", "-")], 80);
        assert_eq!(w[0], Constraint::Min(19));
        assert_eq!(w[1], Constraint::Min(18));
        assert_eq!(
            w[5],
            Constraint::Min(10),
            "a column of dashes keeps its header's width"
        );
        let v6 = row(
            "[fd00:10:200::1]:40000",
            "[fd00:10:200::2]:8000",
            "[fd00:10:200::9]:8443",
        );
        let w = column_widths(&[v6], 80);
        assert_eq!(
            w[0],
            Constraint::Fill(22),
            "too wide for 80: shared in proportion"
        );
        assert_eq!(w[5], Constraint::Fill(21));
        assert_eq!(column_widths(&[], 80)[1], Constraint::Min(3));
    }

    #[test]
    fn bars_scale_to_the_largest() {
        let lines = bar_lines(&["a", "bb"], &[2, 4], 14);
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        assert_eq!(text, [" a █████     2", "bb █████████ 4"]);
        let zero = bar_lines(&["a"], &[0], 10);
        assert_eq!(zero[0].to_string(), "a        0");
    }

    #[test]
    fn formats() {
        assert_eq!(short_state("ESTABLISHED"), "ESTAB");
        assert_eq!(short_state("SYN_SENT"), "SYN-SENT");
        assert_eq!(short_state("FIN_WAIT1"), "FIN-WAIT-1");
        assert_eq!(age(t(5000), t(4600)), "0.4s");
        assert_eq!(age(t(60_000), t(0)), "60s");
        assert_eq!(age(t(600_000), t(0)), "10m");
        assert_eq!(age(t(0), t(100)), "0.0s");
        assert_eq!(compact(9999), "9999");
        assert_eq!(compact(12_345), "12k");
        assert_eq!(compact(5_600_000), "5.6M");
    }
}
