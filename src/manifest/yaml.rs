//! YAML text → JSON-shaped values plus a field-path → position index, in one parse.
//!
//! serde_yaml is deprecated and keeps no node positions, so we read yaml-rust2's marked
//! events ourselves: every mapping key and sequence item records where it starts, which lets
//! any later error (schema, reference, policy) point at `file:line:col`.

use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// One YAML document: its value and where each field path starts.
#[derive(Debug)]
pub struct Document {
    /// The document as a JSON-shaped value (YAML 1.2 core schema scalars).
    pub value: Value,
    /// Where the document starts.
    pub start: Pos,
    /// Field path (`spec.ingress[0].from`) → position of its key (or item).
    pub positions: HashMap<String, Pos>,
}

impl Document {
    /// The position of `path`, or of its nearest declared ancestor, or of the document.
    pub fn position_of(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.start,
            }
        }
    }
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What it expected.
    pub message: String,
}

/// Parses every document of a multi-document YAML text.
pub fn parse(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        pos: pos(e.marker()),
        message: e.info().to_string(),
    })?;
    if let Some(message) = builder.error {
        return Err(SyntaxError {
            pos: builder.error_pos,
            message,
        });
    }
    Ok(builder.docs)
}

fn pos(m: &Marker) -> Pos {
    // yaml-rust2 counts lines from 1 but columns from 0.
    Pos {
        line: m.line(),
        column: m.col() + 1,
    }
}

enum Frame {
    Map {
        path: String,
        map: Map<String, Value>,
        key: Option<String>,
        anchor: usize,
    },
    Seq {
        path: String,
        items: Vec<Value>,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    docs: Vec<Document>,
    stack: Vec<Frame>,
    positions: HashMap<String, Pos>,
    anchors: HashMap<usize, Value>,
    doc_start: Pos,
    error: Option<String>,
    error_pos: Pos,
}

impl Builder {
    /// The path the next node will have, recording its position; `None` when the next scalar
    /// is a mapping key rather than a node.
    fn next_path(&mut self, at: Pos) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map {
                path, key: Some(k), ..
            }) => Some(join(path, k)),
            Some(Frame::Seq { path, items, .. }) => {
                let p = format!("{path}[{}]", items.len());
                self.positions.entry(p.clone()).or_insert(at);
                Some(p)
            }
        }
    }

    /// Places a finished node into its parent (or finishes the document).
    fn place(&mut self, value: Value, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(Document {
                value,
                start: self.doc_start,
                positions: std::mem::take(&mut self.positions),
            }),
            Some(Frame::Map { map, key, .. }) => {
                if let Some(k) = key.take() {
                    map.insert(k, value);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(value),
        }
    }

    fn fail(&mut self, at: Pos, message: &str) {
        if self.error.is_none() {
            self.error = Some(message.to_string());
            self.error_pos = at;
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = pos(&mark);
        match ev {
            Event::DocumentStart => self.doc_start = at,
            Event::Scalar(text, style, anchor, _tag) => {
                if let Some(Frame::Map { path, key, map, .. }) = self.stack.last_mut()
                    && key.is_none()
                {
                    let p = join(path, &text);
                    // yaml-rust2 marks a block mapping's start after its first entry, so a
                    // mapping (a list item, or the document) is located by its first key.
                    if map.is_empty() {
                        if path.is_empty() {
                            self.doc_start = at;
                        } else if path.ends_with(']') {
                            self.positions.insert(path.clone(), at);
                        }
                    }
                    if map.contains_key(&text) {
                        self.fail(at, &format!("duplicate key `{text}`"));
                        return;
                    }
                    self.positions.insert(p, at);
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(text);
                    }
                    return;
                }
                self.next_path(at);
                let value = scalar(text, style);
                self.place(value, anchor);
            }
            Event::Alias(id) => {
                if self.next_path(at).is_none() {
                    self.fail(at, "an alias cannot be a mapping key");
                    return;
                }
                let value = self.anchors.get(&id).cloned().unwrap_or(Value::Null);
                self.place(value, 0);
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                let Some(path) = self.next_path(at) else {
                    self.fail(at, "complex mapping keys are not supported");
                    return;
                };
                if self.stack.is_empty() {
                    self.doc_start = at;
                }
                let frame = if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        path,
                        map: Map::new(),
                        key: None,
                        anchor,
                    }
                } else {
                    Frame::Seq {
                        path,
                        items: Vec::new(),
                        anchor,
                    }
                };
                self.stack.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Map { map, anchor, .. }) => self.place(Value::Object(map), anchor),
                Some(Frame::Seq { items, anchor, .. }) => self.place(Value::Array(items), anchor),
                None => self.fail(at, "unbalanced end of collection"),
            },
            _ => {}
        }
    }
}

/// Resolves a scalar with the YAML 1.2 core schema: only plain scalars can be null, bool or
/// numbers; quoted ones are always strings (so `"10001"` stays a string).
fn scalar(text: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(u) = text.parse::<u64>() {
        return Value::Number(u.into());
    }
    let looks_numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && text.chars().any(|c| c.is_ascii_digit());
    if looks_numeric
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_point_at_keys_and_items() {
        let text = "kind: Container\nspec:\n  user: \"0\"\n  ports:\n    - container: 80\n";
        let docs = parse(text).expect("valid yaml");
        assert_eq!(docs.len(), 1);
        let d = &docs[0];
        assert_eq!(d.positions["spec.user"], Pos { line: 3, column: 3 });
        assert_eq!(d.positions["spec.ports[0]"], Pos { line: 5, column: 7 });
        assert_eq!(
            d.positions["spec.ports[0].container"],
            Pos { line: 5, column: 7 }
        );
        assert_eq!(d.value["spec"]["user"], Value::String("0".into()));
        assert_eq!(d.value["spec"]["ports"][0]["container"], Value::from(80));
        assert_eq!(
            d.position_of("spec.user.deeper"),
            Pos { line: 3, column: 3 }
        );
    }

    #[test]
    fn documents_are_split_and_located() {
        let text = "a: 1\n---\nb: true\n---\nc: ~\n";
        let docs = parse(text).expect("valid yaml");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1].value["b"], Value::Bool(true));
        assert_eq!(docs[2].value["c"], Value::Null);
        assert_eq!(docs[2].positions["c"].line, 5);
    }

    #[test]
    fn duplicate_keys_are_syntax_errors() {
        let err = parse("a: 1\na: 2\n").expect_err("duplicate");
        assert_eq!(err.pos.line, 2);
        assert!(err.message.contains("duplicate key `a`"));
    }

    #[test]
    fn anchors_and_aliases_copy_values() {
        let docs = parse("base: &b {x: 1}\nother: *b\n").expect("valid yaml");
        assert_eq!(docs[0].value["other"]["x"], Value::from(1));
    }
}
