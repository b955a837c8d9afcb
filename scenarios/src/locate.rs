//! Where a key is in a TOML file, and which key sits at a byte offset.
//!
//! Serde gives typed values but forgets where they came from; `toml_edit`'s
//! immutable document keeps the byte span of every key and value. Parse and
//! type errors carry an offset (we ask which key is there); semantic
//! validation knows a key path (we ask where it is). Both end as
//! `line:column` plus a dotted key path such as `endpoints.mix[1].status`.

use toml_edit::{ImDocument, Item, Table, Value};

/// One step in a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Renders a path as `a.b[2].c`.
pub fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// 1-based line and column of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// A parsed document that answers span questions.
pub struct Locator {
    doc: Option<ImDocument<String>>,
}

impl Locator {
    /// Parses `source`; a document that does not parse locates nothing.
    pub fn new(source: &str) -> Locator {
        Locator {
            doc: ImDocument::parse(source.to_string()).ok(),
        }
    }

    /// The byte offset where the value (or, failing that, the key) at `path`
    /// starts; for a missing key, where its nearest existing parent starts.
    pub fn offset_of(&self, path: &[Step]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut best = None;
        let mut node = Node::Table(doc.as_table());
        for step in path {
            let next = match (&node, step) {
                (Node::Table(t), Step::Key(k)) => {
                    if let Some(key) = t.key(k) {
                        best = key.span().map(|s| s.start).or(best);
                    }
                    t.get(k).and_then(Node::from_item)
                }
                (Node::Inline(t), Step::Key(k)) => {
                    if let Some(key) = t.key(k) {
                        best = key.span().map(|s| s.start).or(best);
                    }
                    t.get(k).map(Node::Value)
                }
                (Node::Tables(a), Step::Index(i)) => a.get(*i).map(Node::Table),
                (Node::Value(Value::Array(a)), Step::Index(i)) => a.get(*i).map(Node::Value),
                (Node::Value(Value::InlineTable(t)), Step::Key(k)) => {
                    if let Some(key) = t.key(k) {
                        best = key.span().map(|s| s.start).or(best);
                    }
                    t.get(k).map(Node::Value)
                }
                _ => None,
            };
            match next {
                Some(n) => {
                    if let Some(s) = n.span() {
                        best = Some(s.start);
                    }
                    node = n;
                }
                None => break,
            }
        }
        best
    }

    /// The deepest key path whose key or value covers `offset`.
    pub fn path_at(&self, offset: usize) -> Option<Vec<Step>> {
        let doc = self.doc.as_ref()?;
        let mut path = Vec::new();
        find_in_table(doc.as_table(), offset, &mut path).then_some(path)
    }
}

enum Node<'a> {
    Table(&'a Table),
    Inline(&'a toml_edit::InlineTable),
    Tables(&'a toml_edit::ArrayOfTables),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn from_item(item: &'a Item) -> Option<Node<'a>> {
        Some(match item {
            Item::Table(t) => Node::Table(t),
            Item::ArrayOfTables(a) => Node::Tables(a),
            Item::Value(Value::InlineTable(t)) => Node::Inline(t),
            Item::Value(v) => Node::Value(v),
            Item::None => return None,
        })
    }

    fn span(&self) -> Option<std::ops::Range<usize>> {
        match self {
            Node::Table(_) | Node::Tables(_) => None,
            Node::Inline(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }
}

fn contains(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

fn find_in_table(t: &Table, offset: usize, path: &mut Vec<Step>) -> bool {
    for (k, item) in t.iter() {
        path.push(Step::Key(k.to_string()));
        let key_hit = contains(t.key(k).and_then(|key| key.span()), offset);
        let found = match item {
            // Children first: a table's own span covers its whole body.
            Item::Table(sub) => {
                find_in_table(sub, offset, path) || key_hit || contains(sub.span(), offset)
            }
            Item::ArrayOfTables(a) => {
                let mut hit = false;
                for (i, sub) in a.iter().enumerate() {
                    path.push(Step::Index(i));
                    if find_in_table(sub, offset, path) || contains(sub.span(), offset) {
                        hit = true;
                        break;
                    }
                    path.pop();
                }
                hit || key_hit
            }
            Item::Value(v) => key_hit || find_in_value(v, offset, path),
            Item::None => false,
        };
        if found {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(v: &Value, offset: usize, path: &mut Vec<Step>) -> bool {
    if !contains(v.span(), offset) {
        return false;
    }
    match v {
        Value::InlineTable(t) => {
            for (k, sub) in t.iter() {
                path.push(Step::Key(k.to_string()));
                if contains(t.key(k).and_then(|key| key.span()), offset)
                    || find_in_value(sub, offset, path)
                {
                    return true;
                }
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, sub) in a.iter().enumerate() {
                path.push(Step::Index(i));
                if find_in_value(sub, offset, path) {
                    return true;
                }
                path.pop();
            }
        }
        _ => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name = \"x\"\n\n[traffic]\nrate_per_s = 5\n\n[endpoints]\nmix = [\n  { behaviour = \"ok\" },\n  { behaviour = \"flaky\", probability = 2.0 },\n]\n\n[[faults]]\nat = \"1s\"\n";

    fn key(s: &str) -> Step {
        Step::Key(s.into())
    }

    #[test]
    fn finds_where_a_path_is() {
        let l = Locator::new(DOC);
        let at = l
            .offset_of(&[
                key("endpoints"),
                key("mix"),
                Step::Index(1),
                key("probability"),
            ])
            .unwrap();
        assert_eq!(line_col(DOC, at), (9, 40));
        let at = l.offset_of(&[key("traffic"), key("rate_per_s")]).unwrap();
        assert_eq!(line_col(DOC, at), (4, 14));
        let at = l
            .offset_of(&[key("faults"), Step::Index(0), key("at")])
            .unwrap();
        assert_eq!(line_col(DOC, at).0, 13);
        // A missing key points at its nearest parent.
        let at = l.offset_of(&[key("traffic"), key("count")]).unwrap();
        assert_eq!(line_col(DOC, at).0, 3);
    }

    #[test]
    fn finds_which_key_is_at_an_offset() {
        let l = Locator::new(DOC);
        let off = DOC.find("2.0").unwrap();
        assert_eq!(
            render(&l.path_at(off).unwrap()),
            "endpoints.mix[1].probability"
        );
        let off = DOC.find("rate_per_s").unwrap();
        assert_eq!(render(&l.path_at(off).unwrap()), "traffic.rate_per_s");
    }
}
