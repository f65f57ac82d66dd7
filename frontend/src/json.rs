//! `rbuild parse --format json`: the syntax tree before expansion, one object per instruction.

use crate::ast::{Body, Dockerfile, Instruction, KvForm};
use serde_json::{json, Map, Value};

/// The whole file: an array of instruction objects (see [`instruction_to_json`]).
pub fn to_json(df: &Dockerfile) -> Value {
    Value::Array(df.instructions.iter().map(instruction_to_json).collect())
}

/// One instruction as an object:
/// `instruction` (lower case), `flags` (raw `--name=value`), `args`, `heredocs`
/// (`name`, `content`, `expand`, `chomp`), `start_line`, `end_line`; plus `form`
/// (`equals`|`legacy`) for ENV and LABEL, `json: true` for exec form, and `trigger` (the nested
/// instruction) for ONBUILD.
pub fn instruction_to_json(ins: &Instruction) -> Value {
    let mut o = Map::new();
    o.insert("instruction".into(), json!(ins.keyword.as_str()));
    o.insert(
        "flags".into(),
        Value::Array(ins.flags.iter().map(|f| json!(f.raw)).collect()),
    );
    o.insert("args".into(), Value::Array(args(&ins.body)));
    match &ins.body {
        Body::KeyValues { form, .. } => {
            let f = match form {
                KvForm::Equals => "equals",
                KvForm::Legacy => "legacy",
            };
            o.insert("form".into(), json!(f));
        }
        Body::Exec(_) => {
            o.insert("json".into(), json!(true));
        }
        Body::Healthcheck { cmd, .. } if matches!(**cmd, Body::Exec(_)) => {
            o.insert("json".into(), json!(true));
        }
        Body::OnBuild(inner) => {
            o.insert("trigger".into(), instruction_to_json(inner));
        }
        _ => {}
    }
    o.insert(
        "heredocs".into(),
        Value::Array(
            ins.heredocs
                .iter()
                .map(|h| {
                    json!({"name": h.name, "content": h.content, "expand": h.expand, "chomp": h.chomp})
                })
                .collect(),
        ),
    );
    o.insert("start_line".into(), json!(ins.span.start_line));
    o.insert("end_line".into(), json!(ins.span.end_line));
    Value::Object(o)
}

fn args(body: &Body) -> Vec<Value> {
    match body {
        Body::Empty => vec![],
        Body::Exec(v) => v.iter().map(|s| json!(s)).collect(),
        Body::Shell(s) | Body::Text(s) => vec![json!(s)],
        Body::Words(w) => w.iter().map(|w| json!(w.text)).collect(),
        Body::KeyValues { pairs, .. } => pairs
            .iter()
            .flat_map(|p| [json!(p.key), json!(p.value)])
            .collect(),
        Body::Args(a) => a
            .iter()
            .map(|a| match &a.default {
                Some(d) => json!(format!("{}={d}", a.name)),
                None => json!(a.name),
            })
            .collect(),
        Body::Healthcheck { kind, cmd } => {
            let mut v = vec![json!(kind)];
            v.extend(args(cmd));
            v
        }
        Body::OnBuild(inner) => vec![json!(inner.original)],
    }
}
