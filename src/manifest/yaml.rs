//! YAML text → JSON-shaped values plus a field-path → position index, in one parse.
//!
//! serde_yaml is deprecated and keeps no node positions, so we read yaml-rust2's marked
//! events ourselves: every mapping key and sequence item records where it starts, which lets
//! any later error (schema, reference, policy) point at `file:line:col`.

use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, Parser};
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

/// Deepest nesting of mappings and sequences a document may have. The shipped manifests need
/// six; the bound keeps a hostile `[[[[…` cheap to refuse, and keeps every later step (which
/// walks values recursively) far from the stack's end.
pub const MAX_DEPTH: usize = 64;
/// How much content aliases may copy in one load, in bytes of keys and scalars (plus one per
/// node). An alias copies its anchor, so aliases of aliases grow exponentially (the "billion
/// laughs"); a few shared blocks in honest manifests stay far below this.
pub const MAX_ALIAS_EXPANSION: usize = 1 << 20;
/// How many bytes of field paths the position index may hold in one load. Each node's path
/// repeats its ancestors' keys, so long keys nested deeply would grow the index quadratically.
pub const MAX_INDEX_BYTES: usize = 16 << 20;

/// How many nodes (scalars, mappings, sequences, aliases) one load may hold. The shipped
/// manifests hold about 3,000; every later step (substitution, typing, validation) walks
/// each node, so their number bounds the cost of all of them.
pub const MAX_NODES: usize = 100_000;

/// What one load may still spend. Shared by every file of the load, so that many small files
/// cannot add up to what one file may not do.
#[derive(Debug, Clone)]
pub struct Budget {
    alias: usize,
    index: usize,
    nodes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            alias: MAX_ALIAS_EXPANSION,
            index: MAX_INDEX_BYTES,
            nodes: MAX_NODES,
        }
    }
}

/// Why a YAML text was refused: a syntax error, or a bound that it exceeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// The field path of the offending node, when it has one.
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
    /// True when a bound of the whole load was reached (values, aliases, index): the files
    /// after this one would only fail the same way.
    pub load_wide: bool,
}

/// Parses every document of a multi-document YAML text, within a fresh [`Budget`].
pub fn parse(text: &str) -> Result<Vec<Document>, SyntaxError> {
    parse_within(text, &mut Budget::default())
}

/// Parses every document of a multi-document YAML text, spending from `budget`. Stops at
/// the first error, so a hostile text costs no more than the events read up to it.
pub fn parse_within(text: &str, budget: &mut Budget) -> Result<Vec<Document>, SyntaxError> {
    let mut builder = Builder::new(budget);
    let mut parser = Parser::new_from_str(text);
    // Events are pulled one by one rather than through `Parser::load`, which recurses once
    // per nesting level and would overflow the stack on a deeply nested text.
    loop {
        let (event, mark) = parser.next_token().map_err(|e| match e.info() {
            // The scanner's own bound on flow nesting (255), which it may reach before the
            // parser hands us the 65th level: the same problem, said the same way.
            "recursion limit exceeded" => too_deep(pos(e.marker()), None),
            info => SyntaxError {
                pos: pos(e.marker()),
                path: None,
                message: format!("YAML syntax error: {info}"),
                fix: "correct the YAML at this position".to_string(),
                load_wide: false,
            },
        })?;
        if event == Event::StreamEnd {
            return Ok(builder.docs);
        }
        builder.on_event(event, mark);
        if let Some(error) = builder.error.take() {
            return Err(error);
        }
    }
}

fn too_deep(at: Pos, path: Option<&str>) -> SyntaxError {
    SyntaxError {
        pos: at,
        path: path.filter(|p| !p.is_empty()).map(shown),
        message: format!("nested deeper than {MAX_DEPTH} levels"),
        fix: "flatten the structure: a manifest needs only a few levels".to_string(),
        load_wide: false,
    }
}

fn pos(m: &Marker) -> Pos {
    // yaml-rust2 counts lines from 1 but columns from 0.
    Pos {
        line: m.line(),
        column: m.col() + 1,
    }
}

/// A path as shown in an error: hostile paths can be long, a message stays readable.
fn shown(path: &str) -> String {
    const MAX: usize = 120;
    if path.len() <= MAX {
        return path.to_string();
    }
    let mut end = MAX;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

enum Frame {
    Map {
        path: String,
        map: Map<String, Value>,
        key: Option<String>,
        anchor: usize,
        size: usize,
    },
    Seq {
        path: String,
        items: Vec<Value>,
        anchor: usize,
        size: usize,
    },
}

struct Builder<'b> {
    budget: &'b mut Budget,
    docs: Vec<Document>,
    stack: Vec<Frame>,
    positions: HashMap<String, Pos>,
    /// Anchor id → its value and size (what an alias to it costs).
    anchors: HashMap<usize, (Value, usize)>,
    doc_start: Pos,
    error: Option<SyntaxError>,
}

impl<'b> Builder<'b> {
    fn new(budget: &'b mut Budget) -> Self {
        Builder {
            budget,
            docs: Vec::new(),
            stack: Vec::new(),
            positions: HashMap::new(),
            anchors: HashMap::new(),
            doc_start: Pos::default(),
            error: None,
        }
    }

    /// Records where `path` starts, within the index budget.
    fn record(&mut self, path: String, at: Pos, replace: bool) {
        if self.positions.contains_key(&path) && !replace {
            return;
        }
        match self.budget.index.checked_sub(path.len() + 1) {
            Some(left) => self.budget.index = left,
            None => {
                self.exhausted(
                    at,
                    Some(&path),
                    format!(
                        "the field paths of the manifests add up to more than {} MiB (long keys nested deeply)",
                        MAX_INDEX_BYTES >> 20
                    ),
                    "shorten the keys or flatten the nesting",
                );
                return;
            }
        }
        self.positions.insert(path, at);
    }

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
                self.record(p.clone(), at, false);
                Some(p)
            }
        }
    }

    /// Places a finished node of `size` into its parent (or finishes the document).
    fn place(&mut self, value: Value, anchor: usize, size: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, (value.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.docs.push(Document {
                value,
                start: self.doc_start,
                positions: std::mem::take(&mut self.positions),
            }),
            Some(Frame::Map {
                map,
                key,
                size: total,
                ..
            }) => {
                if let Some(k) = key.take() {
                    map.insert(k, value);
                }
                *total += size;
            }
            Some(Frame::Seq {
                items, size: total, ..
            }) => {
                items.push(value);
                *total += size;
            }
        }
    }

    fn fail(&mut self, at: Pos, path: Option<&str>, message: impl Into<String>, fix: &str) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                pos: at,
                path: path.filter(|p| !p.is_empty()).map(shown),
                message: message.into(),
                fix: fix.to_string(),
                load_wide: false,
            });
        }
    }

    /// Fails on a bound of the whole load.
    fn exhausted(&mut self, at: Pos, path: Option<&str>, message: String, fix: &str) {
        self.fail(at, path, message, fix);
        if let Some(e) = &mut self.error {
            e.load_wide = true;
        }
    }

    /// Counts one node against the budget; false (and an error) once it is spent.
    fn count_node(&mut self, at: Pos) -> bool {
        match self.budget.nodes.checked_sub(1) {
            Some(left) => {
                self.budget.nodes = left;
                true
            }
            None => {
                let path = self.stack.last().map(|f| match f {
                    Frame::Map { path, .. } | Frame::Seq { path, .. } => path.clone(),
                });
                self.exhausted(
                    at,
                    path.as_deref(),
                    format!("the manifests hold more than {MAX_NODES} values"),
                    "the stack needs a few thousand; remove generated or repeated content",
                );
                false
            }
        }
    }

    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = pos(&mark);
        if matches!(
            ev,
            Event::Scalar(..)
                | Event::Alias(_)
                | Event::MappingStart(..)
                | Event::SequenceStart(..)
        ) && !self.count_node(at)
        {
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.doc_start = at;
                // An alias refers to an anchor of its own document only.
                self.anchors.clear();
            }
            Event::Scalar(text, style, anchor, _tag) => {
                if let Some(Frame::Map { path, key, map, .. }) = self.stack.last_mut()
                    && key.is_none()
                {
                    let p = join(path, &text);
                    // yaml-rust2 marks a block mapping's start after its first entry, so a
                    // mapping (a list item, or the document) is located by its first key.
                    let locate_parent = map.is_empty().then(|| path.clone());
                    if map.contains_key(&text) {
                        self.fail(
                            at,
                            Some(&p),
                            format!("YAML syntax error: duplicate key `{}`", shown(&text)),
                            "correct the YAML at this position",
                        );
                        return;
                    }
                    match locate_parent {
                        Some(parent) if parent.is_empty() => self.doc_start = at,
                        Some(parent) if parent.ends_with(']') => self.record(parent, at, true),
                        _ => {}
                    }
                    self.record(p, at, true);
                    if let Some(Frame::Map { key, size, .. }) = self.stack.last_mut() {
                        *size += text.len() + 1;
                        *key = Some(text);
                    }
                    return;
                }
                self.next_path(at);
                let size = text.len() + 1;
                let value = scalar(text, style);
                self.place(value, anchor, size);
            }
            Event::Alias(id) => {
                let Some(path) = self.next_path(at) else {
                    self.fail(
                        at,
                        None,
                        "YAML syntax error: an alias cannot be a mapping key",
                        "write the key out",
                    );
                    return;
                };
                let Some((value, size)) = self.anchors.get(&id) else {
                    self.fail(
                        at,
                        Some(&path),
                        "this alias refers to no anchor of its document",
                        "define the anchor (`&name`) before its alias (`*name`), in the same document",
                    );
                    return;
                };
                let size = *size;
                let Some(left) = self.budget.alias.checked_sub(size) else {
                    self.exhausted(
                        at,
                        Some(&path),
                        format!(
                            "aliases here copy more than {} MiB of content (each alias copies its anchor, so aliases of aliases grow exponentially)",
                            MAX_ALIAS_EXPANSION >> 20
                        ),
                        "write the values out, or alias only small blocks and never nest aliases",
                    );
                    return;
                };
                self.budget.alias = left;
                let value = value.clone();
                self.place(value, 0, size);
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                let Some(path) = self.next_path(at) else {
                    self.fail(
                        at,
                        None,
                        "YAML syntax error: complex mapping keys are not supported",
                        "use a plain scalar as the key",
                    );
                    return;
                };
                if self.stack.len() >= MAX_DEPTH {
                    if self.error.is_none() {
                        self.error = Some(too_deep(at, Some(&path)));
                    }
                    return;
                }
                if self.stack.is_empty() {
                    self.doc_start = at;
                }
                let frame = if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        path,
                        map: Map::new(),
                        key: None,
                        anchor,
                        size: 1,
                    }
                } else {
                    Frame::Seq {
                        path,
                        items: Vec::new(),
                        anchor,
                        size: 1,
                    }
                };
                self.stack.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Map {
                    map, anchor, size, ..
                }) => self.place(Value::Object(map), anchor, size),
                Some(Frame::Seq {
                    items,
                    anchor,
                    size,
                    ..
                }) => self.place(Value::Array(items), anchor, size),
                None => self.fail(
                    at,
                    None,
                    "YAML syntax error: unbalanced end of collection",
                    "correct the YAML at this position",
                ),
            },
            _ => {}
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

    /// The classic "billion laughs": nine levels of nine aliases, a few hundred bytes.
    fn billion_laughs() -> String {
        let mut text = String::from("a0: &a0 [\"lol\"]\n");
        for level in 1..=9 {
            let prev = format!("*a{}", level - 1);
            let items = [prev.as_str(); 9].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        text
    }

    #[test]
    fn nested_aliases_are_refused_once_they_copy_too_much() {
        let text = billion_laughs();
        assert!(text.len() < 600, "{} bytes", text.len());
        let err = parse(&text).expect_err("bounded");
        assert_eq!(err.pos.line, 7, "{err:?}");
        assert_eq!(err.path.as_deref(), Some("a6[2]"));
        assert!(
            err.message
                .starts_with("aliases here copy more than 1 MiB of content"),
            "{err:?}"
        );
    }

    #[test]
    fn the_alias_budget_is_shared_by_every_file_of_a_load() {
        // 600 KiB per file: one file is fine, the second crosses the load's 1 MiB.
        let block = "x".repeat(600 << 10);
        let text = format!("a: &a \"{block}\"\nb: *a\n");
        let mut budget = Budget::default();
        parse_within(&text, &mut budget).expect("the first copy fits");
        let err = parse_within(&text, &mut budget).expect_err("the second does not");
        assert_eq!(err.path.as_deref(), Some("b"));
    }

    #[test]
    fn an_alias_cannot_reach_into_another_document() {
        let err = parse("a: &x 1\n---\nb: *x\n").expect_err("no anchor here");
        assert_eq!(err.pos.line, 3);
        assert_eq!(
            err.message,
            "this alias refers to no anchor of its document"
        );
    }

    #[test]
    fn deep_nesting_fails_fast_without_overflowing_the_stack() {
        for text in [
            "[".repeat(10_000),
            "{a: ".repeat(10_000),
            (0..10_000)
                .map(|i| format!("{}a:\n", " ".repeat(i)))
                .collect::<String>(),
            (0..10_000)
                .map(|i| format!("{}-\n", " ".repeat(i * 2)))
                .collect::<String>(),
        ] {
            let err = parse(&text).expect_err("too deep");
            assert!(
                err.message.contains("nested deeper than 64 levels")
                    || err.message.contains("recursion limit exceeded"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn the_number_of_values_is_bounded() {
        let text = format!("x: [{}1]\n", "1,".repeat(MAX_NODES));
        let err = parse(&text).expect_err("too many nodes");
        assert_eq!(err.path.as_deref(), Some("x"));
        assert_eq!(err.message, "the manifests hold more than 100000 values");
    }

    #[test]
    fn the_position_index_is_bounded() {
        // Long keys nested deeply make every descendant's path long (`? key` has no 1024
        // character limit, unlike an implicit key).
        let key = "k".repeat(60_000);
        let mut text = String::new();
        for depth in 0..40 {
            let indent = " ".repeat(depth * 2);
            text.push_str(&format!("{indent}? {key}\n{indent}:\n"));
        }
        for i in 0..20_000 {
            text.push_str(&format!("{}- {i}\n", " ".repeat(82)));
        }
        let err = parse(&text).expect_err("index too large");
        assert!(
            err.message
                .contains("field paths of the manifests add up to"),
            "{err:?}"
        );
    }
}
