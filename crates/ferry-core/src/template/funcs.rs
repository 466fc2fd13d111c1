//! The functions the docker CLI adds to Go's templates (`cli/templates`): `json`,
//! `split`, `join`, `title`, `lower`, `upper`, `pad`, `truncate`, and the variants it
//! uses to render a table's header row, which print their first argument unchanged.

use std::sync::Arc;

use gotmpl::{Template, TemplateError, Value};
use serde_json::Value as Json;

type Res = gotmpl::Result<Value>;

fn arg<'a>(name: &str, args: &'a [Value], i: usize) -> gotmpl::Result<&'a Value> {
    args.get(i).ok_or_else(|| {
        TemplateError::Exec(format!("wrong number of args for {name}: want {}", i + 1))
    })
}

fn string(name: &str, args: &[Value], i: usize) -> gotmpl::Result<String> {
    Ok(arg(name, args, i)?.to_string())
}

fn int(name: &str, args: &[Value], i: usize) -> gotmpl::Result<usize> {
    let v = arg(name, args, i)?;
    v.as_int()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| TemplateError::Exec(format!("{name}: {v} is not a non-negative integer")))
}

fn str_value(s: impl AsRef<str>) -> Value {
    Value::String(Arc::from(s.as_ref()))
}

/// A template value as JSON; maps come out with their keys sorted, as Go's
/// `encoding/json` writes maps.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Uint(u) => Json::from(*u),
        Value::Float(f) => Json::from(*f),
        Value::String(s) => Json::String(s.to_string()),
        Value::List(l) => Json::Array(l.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect()),
        _ => Json::Null,
    }
}

/// The node of `root` equal to `v`, so that `json` keeps the field order of the
/// document docker's structs would give, not the template map's sorted order.
fn find<'a>(root: &'a Json, v: &Json) -> Option<&'a Json> {
    if root == v {
        return Some(root);
    }
    match root {
        Json::Object(m) => m.values().find_map(|x| find(x, v)),
        Json::Array(a) => a.iter().find_map(|x| find(x, v)),
        _ => None,
    }
}

/// Go's `strings.Title` as the CLI uses it: the first letter of each word upper-cased,
/// the rest left alone.
fn title(s: &str) -> String {
    let mut prev_letter = false;
    s.chars()
        .map(|c| {
            let out = if prev_letter {
                c.to_string()
            } else {
                c.to_uppercase().collect()
            };
            prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
            out
        })
        .collect()
}

fn join(args: &[Value]) -> Res {
    let sep = string("join", args, 1)?;
    let items: Vec<String> = match arg("join", args, 0)? {
        Value::List(l) => l.iter().map(ToString::to_string).collect(),
        Value::Nil => vec![],
        other => {
            return Err(TemplateError::Exec(format!(
                "join: {other} is not a list of strings"
            )))
        }
    };
    Ok(str_value(items.join(&sep)))
}

fn split(args: &[Value]) -> Res {
    let s = string("split", args, 0)?;
    let sep = string("split", args, 1)?;
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| str_value(c.to_string())).collect()
    } else {
        s.split(sep.as_str()).map(str_value).collect()
    };
    Ok(Value::List(parts.into()))
}

fn pad(args: &[Value]) -> Res {
    let s = string("pad", args, 0)?;
    if s.is_empty() {
        return Ok(str_value(s));
    }
    let (pre, post) = (int("pad", args, 1)?, int("pad", args, 2)?);
    Ok(str_value(format!(
        "{}{s}{}",
        " ".repeat(pre),
        " ".repeat(post)
    )))
}

fn truncate(args: &[Value]) -> Res {
    let s = string("truncate", args, 0)?;
    let n = int("truncate", args, 1)?;
    Ok(str_value(s.chars().take(n).collect::<String>()))
}

/// Docker's functions for rendering `root` (the object the template runs on).
pub fn with_docker_funcs(t: Template, root: Arc<Json>) -> Template {
    t.func("json", move |args| {
        let v = to_json(arg("json", args, 0)?);
        let v = find(&root, &v).unwrap_or(&v);
        serde_json::to_string(v)
            .map(str_value)
            .map_err(|e| TemplateError::Exec(format!("json: {e}")))
    })
    .func("split", split)
    .func("join", join)
    .func("title", |a| Ok(str_value(title(&string("title", a, 0)?))))
    .func("lower", |a| {
        Ok(str_value(string("lower", a, 0)?.to_lowercase()))
    })
    .func("upper", |a| {
        Ok(str_value(string("upper", a, 0)?.to_uppercase()))
    })
    .func("pad", pad)
    .func("truncate", truncate)
}

/// The same names for a table's header row: each returns its first argument.
pub fn with_header_funcs(t: Template) -> Template {
    let first = |a: &[Value]| Ok(arg("header", a, 0)?.clone());
    [
        "json", "split", "join", "title", "lower", "upper", "pad", "truncate",
    ]
    .into_iter()
    .fold(t, |t, name| t.func(name, first))
}
