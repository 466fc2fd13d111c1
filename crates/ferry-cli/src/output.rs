//! Output as docker prints it: 4-space indented JSON, `--format` templates, tables.

use serde::Serialize;
use serde_json::Value;

pub fn pretty(v: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    v.serialize(&mut ser).expect("serializable");
    String::from_utf8(out).expect("utf8")
}

/// Print inspect results: the JSON array, or each object through `format`.
pub fn print_inspect(items: &[Value], format: Option<&str>) -> anyhow::Result<()> {
    match format {
        Some(t) => {
            for it in items {
                println!("{}", ferry_core::template::render(t, it)?);
            }
        }
        None => println!("{}", pretty(&Value::Array(items.to_vec()))),
    }
    Ok(())
}

/// Columns padded as docker's tabwriter does (3 spaces between columns).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == r.len() {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        s.push_str(line.join("   ").trim_end());
        s.push('\n');
    }
    s
}
