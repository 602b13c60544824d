//! A plain text table that fits a width: columns shrink (widest first, with an ellipsis) until
//! the rows fit, and cells may carry a colour that is drawn only on a terminal.

use std::io::IsTerminal;

/// How a cell is coloured on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Colour {
    /// Default colour.
    Plain,
    /// Green: encrypted.
    Good,
    /// Yellow: integrity only, or a caveat.
    Warn,
    /// Red: not secured.
    Bad,
    /// Dim: nothing to say (no peer).
    Dim,
}

impl Colour {
    fn sgr(self) -> Option<&'static str> {
        match self {
            Self::Plain => None,
            Self::Good => Some("\x1b[32m"),
            Self::Warn => Some("\x1b[33m"),
            Self::Bad => Some("\x1b[31m"),
            Self::Dim => Some("\x1b[2m"),
        }
    }
}

/// One cell: text and colour.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub(crate) text: String,
    pub(crate) colour: Colour,
}

impl Cell {
    pub(crate) fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            colour: Colour::Plain,
        }
    }

    pub(crate) fn coloured(text: impl Into<String>, colour: Colour) -> Self {
        Self {
            text: text.into(),
            colour,
        }
    }
}

/// Where the table goes: its width (`None`: unlimited) and whether to colour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    pub(crate) width: Option<usize>,
    pub(crate) colour: bool,
}

impl Output {
    /// Standard output: the terminal's width and colour when it is a terminal (and `NO_COLOR`
    /// is unset); `COLUMNS` when it is set; otherwise unlimited and plain.
    pub(crate) fn stdout() -> Self {
        let stdout = std::io::stdout();
        let tty = stdout.is_terminal();
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|&c| c > 0);
        let width = columns.or_else(|| {
            tty.then(|| rustix::termios::tcgetwinsize(&stdout).ok())
                .flatten()
                .map(|ws| usize::from(ws.ws_col))
                .filter(|&c| c > 0)
        });
        Self {
            width,
            colour: tty && std::env::var_os("NO_COLOR").is_none(),
        }
    }
}

/// Fewest characters a shrunk column keeps.
const MIN_COLUMN: usize = 5;
/// Spaces between columns.
const GAP: usize = 2;

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Column widths for `rows` under `header` fitting `width`: the natural widths, then the widest
/// columns among `shrinkable` narrowed one character at a time until the line fits or every
/// shrinkable column is at its minimum.
pub(crate) fn widths(
    header: &[&str],
    rows: &[Vec<Cell>],
    shrinkable: &[usize],
    width: Option<usize>,
) -> Vec<usize> {
    let mut w: Vec<usize> = header.iter().map(|h| chars(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(slot) = w.get_mut(i) {
                *slot = (*slot).max(chars(&cell.text));
            }
        }
    }
    let Some(limit) = width else {
        return w;
    };
    let total = |w: &[usize]| w.iter().sum::<usize>() + GAP * w.len().saturating_sub(1);
    while total(&w) > limit {
        let widest = shrinkable
            .iter()
            .copied()
            .filter(|&i| w.get(i).is_some_and(|&c| c > MIN_COLUMN))
            .max_by_key(|&i| (w[i], std::cmp::Reverse(i)));
        match widest {
            Some(i) => w[i] -= 1,
            None => break,
        }
    }
    w
}

/// `text` cut to `width` characters, with `…` marking the cut.
pub(crate) fn fit(text: &str, width: usize) -> String {
    if chars(text) <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The table as lines, without trailing spaces.
pub(crate) fn render(
    header: &[&str],
    rows: &[Vec<Cell>],
    shrinkable: &[usize],
    out: Output,
) -> Vec<String> {
    let w = widths(header, rows, shrinkable, out.width);
    let line = |cells: Vec<(String, Colour)>| {
        let mut s = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, (text, colour)) in cells.into_iter().enumerate() {
            let text = fit(&text, w[i]);
            let pad = if i == last {
                0
            } else {
                w[i] - chars(&text) + GAP
            };
            match colour.sgr().filter(|_| out.colour) {
                Some(sgr) => s.push_str(&format!("{sgr}{text}\x1b[0m")),
                None => s.push_str(&text),
            }
            s.push_str(&" ".repeat(pad));
        }
        s.trim_end().to_string()
    };
    let mut lines = vec![line(
        header
            .iter()
            .map(|h| (h.to_string(), Colour::Plain))
            .collect(),
    )];
    for row in rows {
        lines.push(line(
            row.iter().map(|c| (c.text.clone(), c.colour)).collect(),
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<Cell> {
        cells.iter().map(|c| Cell::plain(*c)).collect()
    }

    #[test]
    fn natural_widths_without_a_limit() {
        let rows = vec![row(&["tcp", "10.0.0.1:22"]), row(&["udp", "x"])];
        assert_eq!(widths(&["P", "LOCAL"], &rows, &[1], None), vec![3, 11]);
    }

    #[test]
    fn shrinks_the_widest_shrinkable_column_first() {
        let rows = vec![row(&["tcp", "aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbb"])];
        // Natural: 3 + 2 + 20 + 2 + 10 = 37.
        let w = widths(&["P", "A", "B"], &rows, &[1, 2], Some(30));
        assert_eq!(w, vec![3, 13, 10]);
        let w = widths(&["P", "A", "B"], &rows, &[1, 2], Some(20));
        assert_eq!(w.iter().sum::<usize>() + 4, 20);
        assert!(w[1] >= MIN_COLUMN && w[2] >= MIN_COLUMN);
        // Cannot fit: stops at the minimum widths.
        let w = widths(&["P", "A", "B"], &rows, &[1, 2], Some(3));
        assert_eq!(w, vec![3, MIN_COLUMN, MIN_COLUMN]);
    }

    #[test]
    fn rendered_lines_fit_and_mark_cuts() {
        let rows = vec![row(&["tcp", "127.0.0.1:40000", "a-very-long-process-name"])];
        let out = Output {
            width: Some(30),
            colour: false,
        };
        let lines = render(&["NETID", "LOCAL", "PROCESS"], &rows, &[1, 2], out);
        assert!(lines.iter().all(|l| l.chars().count() <= 30), "{lines:?}");
        assert!(lines[1].contains('…'));
        assert!(!lines[1].contains('\x1b'));
    }

    #[test]
    fn colour_only_when_asked() {
        let rows = vec![vec![Cell::coloured("encrypted", Colour::Good)]];
        let on = Output {
            width: None,
            colour: true,
        };
        assert_eq!(
            render(&["P"], &rows, &[], on)[1],
            "\x1b[32mencrypted\x1b[0m"
        );
        let off = Output {
            width: None,
            colour: false,
        };
        assert_eq!(render(&["P"], &rows, &[], off)[1], "encrypted");
    }

    #[test]
    fn fit_counts_characters_not_bytes() {
        assert_eq!(fit("ééééé", 5), "ééééé");
        assert_eq!(fit("éééééé", 5), "éééé…");
    }
}
