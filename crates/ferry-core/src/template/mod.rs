//! `--format`: Go's text/template (the `gotmpl` crate, a port of Go's package with
//! Go's output: sorted map ranges, `<no value>`, `printf` verbs) plus what the docker
//! CLI adds on top: its functions (`json`, `join`, `split`, `title`, `lower`, `upper`,
//! `pad`, `truncate`), the `json` and `table` shorthands of list commands, and tables
//! aligned by Go's tabwriter under a header row.
//!
//! Data is the JSON document the API answers; `json` prints a node of it in the
//! document's own field order (docker prints its structs' order), maps sorted.

mod funcs;
mod tabwriter;

use std::sync::Arc;

use gotmpl::Template;
use serde_json::Value as Json;

pub use tabwriter::align;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template parsing error: {0}")]
    Parse(String),
    #[error("{0}")]
    Execute(String),
}

/// How a list command (`ps`, `network ls`) prints its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFormat {
    /// A header row, then one row per item, aligned in columns.
    Table(String),
    /// One template output per item, each on its own line.
    Rows(String),
}

impl ListFormat {
    /// docker's rules: empty or `table` is the command's default table, `table X` is
    /// X as a table, `json` is `{{json .}}` per item, anything else a template per item.
    /// `\t` and `\n` typed as two characters become a tab and a newline.
    pub fn parse(format: &str, default_table: &str) -> ListFormat {
        let unescape = |s: &str| s.trim().replace(r"\t", "\t").replace(r"\n", "\n");
        match format {
            "" | "table" => ListFormat::Table(unescape(
                default_table.strip_prefix("table").unwrap_or(default_table),
            )),
            "json" => ListFormat::Rows("{{json .}}".into()),
            f => match f.strip_prefix("table") {
                Some(rest) => ListFormat::Table(unescape(rest)),
                None => ListFormat::Rows(unescape(f)),
            },
        }
    }
}

fn parse(t: Template, src: &str) -> Result<Template, TemplateError> {
    t.parse(src)
        .map_err(|e| TemplateError::Parse(e.to_string()))
}

/// Render `src` against one document, with docker's functions.
pub fn render(src: &str, doc: &Json) -> Result<String, TemplateError> {
    let root = Arc::new(doc.clone());
    let t = parse(funcs::with_docker_funcs(Template::new(""), root), src)?;
    let data = gotmpl::to_value(doc).map_err(|e| TemplateError::Execute(e.to_string()))?;
    t.execute_to_string(&data)
        .map_err(|e| TemplateError::Execute(format!("template: {e}")))
}

/// `inspect --format`: each document through the template, one per line.
pub fn render_each(src: &str, docs: &[Json]) -> Result<String, TemplateError> {
    let mut out = String::new();
    for d in docs {
        out.push_str(&render(src, d)?);
        out.push('\n');
    }
    Ok(out)
}

/// A list command's output. `header` maps each field name to its column title
/// (`{"ID": "NETWORK ID", …}`); `rows` are the per-item contexts docker's formatter
/// would give the template.
pub fn render_list(
    format: &ListFormat,
    header: &Json,
    rows: &[Json],
) -> Result<String, TemplateError> {
    match format {
        ListFormat::Rows(src) => render_each(src, rows),
        ListFormat::Table(src) => {
            let head = parse(funcs::with_header_funcs(Template::new("")), src)?;
            let data =
                gotmpl::to_value(header).map_err(|e| TemplateError::Execute(e.to_string()))?;
            let mut text = head
                .execute_to_string(&data)
                .map_err(|e| TemplateError::Execute(format!("template: {e}")))?;
            text.push('\n');
            text.push_str(&render_each(src, rows)?);
            Ok(align(&text))
        }
    }
}

#[cfg(test)]
mod tests;
