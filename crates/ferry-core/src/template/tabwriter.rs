//! Go's `text/tabwriter` as the docker CLI configures it for tables
//! (`tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`): cells end at a tab, a column is as
//! wide as its widest cell plus 3 and at least 10, and a column's width holds only for
//! the block of consecutive lines that have a cell in it. The last cell of a line is
//! not tab-terminated and so never aligned or padded.

const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

/// Align `text` (lines of tab-separated cells) as docker's tables are aligned.
pub fn align(text: &str) -> String {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<Vec<&str>> = body.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut out = String::new();
    let mut widths = vec![];
    format_block(&lines, 0, lines.len(), &mut widths, &mut out);
    if text.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn width(cell: &str) -> usize {
    cell.chars().count()
}

/// Go's `Writer.format`: find the blocks of lines that have a cell in the next column,
/// fix that column's width for the block, and recurse into it.
fn format_block(
    lines: &[Vec<&str>],
    mut start: usize,
    end: usize,
    widths: &mut Vec<usize>,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = start;
    while this < end {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, start, this, widths, out);
        start = this;
        let mut w = MIN_WIDTH;
        while this < end && column + 1 < lines[this].len() {
            w = w.max(width(lines[this][column]) + PADDING);
            this += 1;
        }
        widths.push(w);
        format_block(lines, start, this, widths, out);
        widths.pop();
        start = this;
    }
    write_lines(lines, start, end, widths, out);
}

fn write_lines(lines: &[Vec<&str>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for (i, line) in lines.iter().enumerate().take(to).skip(from) {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if let Some(w) = widths.get(j).filter(|_| j + 1 < line.len()) {
                out.extend(std::iter::repeat_n(' ', w.saturating_sub(width(cell))));
            }
        }
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::align;

    #[test]
    fn columns_are_as_wide_as_the_widest_cell_plus_three_and_at_least_ten() {
        let t = "NETWORK ID\tNAME\tDRIVER\tSCOPE\n0123456789ab\tbridge\tbridge\tlocal\n";
        assert_eq!(
            align(t),
            "NETWORK ID     NAME      DRIVER    SCOPE\n0123456789ab   bridge    bridge    local\n"
        );
    }

    #[test]
    fn the_last_cell_is_never_padded_and_a_line_without_tabs_breaks_the_block() {
        assert_eq!(
            align("a\tb\nlonger-cell-here\tc"),
            "a                  b\nlonger-cell-here   c"
        );
        assert_eq!(
            align("a\tb\nplain\nc\td"),
            "a         b\nplain\nc         d"
        );
    }
}
