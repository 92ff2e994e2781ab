//! The operator CLI's one table renderer: left-aligned columns two spaces apart, a header
//! line, one line per row, no trailing spaces, and a sentence instead of an empty table.
//!
//! Owns the layout only: which columns a listing has and what goes in each cell belong to
//! the listing (a [`Row`] implementation next to its command). Must never reach the
//! daemon or the store, print, or know any listing's fields.

/// One line of a table with `N` columns.
pub(super) trait Row<const N: usize> {
    /// The column titles, in order.
    const HEADERS: [&'static str; N];
    /// This row's cells, in the order of [`Self::HEADERS`].
    fn cells(&self) -> [String; N];
}

/// The table of `rows`, or `empty` (a whole line) when there are none.
pub(super) fn render<const N: usize, R: Row<N>>(rows: &[R], empty: &str) -> String {
    if rows.is_empty() {
        return empty.into();
    }
    let cells: Vec<[String; N]> = rows.iter().map(Row::cells).collect();
    layout(&R::HEADERS, &cells)
}

/// Left-aligned columns, two spaces apart, each as wide as its widest cell.
fn layout<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: [usize; N] = headers.map(|header| header.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = line(headers.iter().copied(), &widths);
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str), &widths));
    }
    out
}

/// One line: each cell padded to its column's width, trailing spaces trimmed.
fn line<'a>(cells: impl Iterator<Item = &'a str>, widths: &[usize]) -> String {
    let padded: Vec<String> = cells
        .zip(widths)
        .map(|(cell, &width)| format!("{cell:<width$}"))
        .collect();
    format!("{}\n", padded.join("  ").trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair(&'static str, &'static str);

    impl Row<2> for Pair {
        const HEADERS: [&'static str; 2] = ["A", "LONG HEADER"];
        fn cells(&self) -> [String; 2] {
            [self.0.into(), self.1.into()]
        }
    }

    #[test]
    fn tables_align_columns() {
        let table = render(&[Pair("wide cell", "x"), Pair("y", "z")], "none\n");
        assert_eq!(
            table,
            "A          LONG HEADER\nwide cell  x\ny          z\n"
        );
    }

    #[test]
    fn widths_count_characters_and_lines_keep_no_trailing_spaces() {
        let table = render(&[Pair("ünï", "")], "none\n");
        assert_eq!(table, "A    LONG HEADER\nünï\n");
    }

    #[test]
    fn no_rows_is_the_sentence_alone() {
        assert_eq!(render::<2, Pair>(&[], "nothing here\n"), "nothing here\n");
    }
}
