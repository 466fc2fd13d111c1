//! Output as docker prints it: 4-space indented JSON, `--format` templates (Go's
//! template language with docker's functions and shorthands), aligned tables.

use ferry_core::template::{render_each, render_list, ListFormat};
use serde::Serialize;
use serde_json::Value;

pub fn pretty(v: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    v.serialize(&mut ser).expect("serializable");
    String::from_utf8(out).expect("utf8")
}

/// Print inspect results: the indented JSON array, the compact array for
/// `--format json`, or each object through the template.
pub fn print_inspect(items: &[Value], format: Option<&str>) -> anyhow::Result<()> {
    let all = Value::Array(items.to_vec());
    match format.unwrap_or("") {
        "" => println!("{}", pretty(&all)),
        "json" => println!("{}", serde_json::to_string(&all)?),
        t => print!("{}", render_each(t, items)?),
    }
    Ok(())
}

/// Print a list command's rows: `format` as given to `--format` (none: the
/// command's `default_table`); `header` titles the columns of a table.
pub fn print_list(
    format: Option<&str>,
    default_table: &str,
    header: &Value,
    rows: &[Value],
) -> anyhow::Result<()> {
    let f = ListFormat::parse(format.unwrap_or(""), default_table);
    print!("{}", render_list(&f, header, rows)?);
    Ok(())
}
