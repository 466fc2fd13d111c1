//! A small subset of Go's text/template, enough for `--format` as people use it with
//! docker: literal text, `{{.Path.To.Field}}`, `{{json .Path}}` and `{{ index .Map "key" }}`.
//! Anything else (`range`, `if`, pipelines) is refused with an error that names it.

use serde_json::Value;

use crate::CoreError;

fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim();
    if path == "." {
        return Some(root);
    }
    let mut cur = root;
    for part in path.trim_start_matches('.').split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

fn render_value(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "<no value>".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => {
            format!(
                "[{}]",
                a.iter()
                    .map(|x| render_value(Some(x)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
        Some(Value::Object(m)) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, x)| format!("{k}:{}", render_value(Some(x))))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Some(other) => other.to_string(),
    }
}

fn eval(action: &str, root: &Value) -> Result<String, CoreError> {
    let words: Vec<&str> = action.split_whitespace().collect();
    match words.as_slice() {
        [path] if path.starts_with('.') => Ok(render_value(lookup(root, path))),
        ["json", path] => Ok(
            serde_json::to_string(lookup(root, path).unwrap_or(&Value::Null)).unwrap_or_default(),
        ),
        ["index", path, key] => {
            let key = key.trim_matches('"');
            Ok(render_value(lookup(root, path).and_then(|m| m.get(key))))
        }
        _ => Err(CoreError::Invalid(format!(
            "template: unsupported action {{{{{action}}}}}"
        ))),
    }
}

/// Render `tmpl` against `root`.
pub fn render(tmpl: &str, root: &Value) -> Result<String, CoreError> {
    let mut out = String::new();
    let mut rest = tmpl;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| CoreError::Invalid("template: unclosed action".into()))?;
        out.push_str(&eval(after[..end].trim().trim_matches('-').trim(), root)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_paths_json_and_index() {
        let v = json!({"NetworkSettings": {"IPAddress": "172.17.0.2", "Networks": {"n": {"IPAddress": "10.0.0.2"}}}});
        assert_eq!(
            render("{{ .NetworkSettings.IPAddress }}", &v).unwrap(),
            "172.17.0.2"
        );
        assert_eq!(
            render("ip={{.NetworkSettings.Networks.n.IPAddress}}!", &v).unwrap(),
            "ip=10.0.0.2!"
        );
        assert_eq!(
            render("{{json .NetworkSettings.Networks.n}}", &v).unwrap(),
            r#"{"IPAddress":"10.0.0.2"}"#
        );
        assert_eq!(
            render(r#"{{index .NetworkSettings.Networks "n"}}"#, &v).unwrap(),
            "map[IPAddress:10.0.0.2]"
        );
        assert!(render("{{range .X}}", &v).is_err());
        assert!(render("{{ .A", &v).is_err());
    }
}
