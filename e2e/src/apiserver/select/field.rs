//! Field selectors: `path=value`, `path==value`, `path!=value`, comma-separated, with
//! `\,`, `\=` and `\\` escapes as the Go parser reads them.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
struct Term {
    path: String,
    negated: bool,
    value: String,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<Term>);

impl FieldSelector {
    /// Parses `input`; an error message worded for a 400.
    pub fn parse(input: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for raw in split_unescaped(input, ',') {
            if raw.trim().is_empty() {
                continue;
            }
            let (path, negated, value) = if let Some((p, v)) = split_op(&raw, "!=") {
                (p, true, v)
            } else if let Some((p, v)) = split_op(&raw, "==") {
                (p, false, v)
            } else if let Some((p, v)) = split_op(&raw, "=") {
                (p, false, v)
            } else {
                return Err(format!(
                    "invalid selector: '{input}'; can't understand '{raw}'"
                ));
            };
            terms.push(Term {
                path: path.trim().to_string(),
                negated,
                value: unescape(&value),
            });
        }
        Ok(Self(terms))
    }

    /// The field paths this selector names.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|t| t.path.as_str())
    }

    /// Whether `obj` matches every term. A missing field reads as the empty string.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|term| {
            let pointer = format!("/{}", term.path.replace('.', "/"));
            let actual = match obj.pointer(&pointer) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (actual == term.value) != term.negated
        })
    }
}

/// Splits at `sep` not preceded by a backslash; escapes are kept for `unescape`.
fn split_unescaped(input: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = input.chars();
    while let Some(c) = chars.next() {
        let current = parts.last_mut().expect("never empty");
        if c == '\\' {
            current.push(c);
            if let Some(escaped) = chars.next() {
                current.push(escaped);
            }
        } else if c == sep {
            parts.push(String::new());
        } else {
            current.push(c);
        }
    }
    parts
}

/// Splits a term at the first unescaped occurrence of `op`.
fn split_op(term: &str, op: &str) -> Option<(String, String)> {
    let bytes = term.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if term[i..].starts_with(op) {
            // `=` must not be the tail of `!=` or the head of `==`.
            let is_plain_eq = op == "=";
            if is_plain_eq && (term[..i].ends_with('!') || term[i + 1..].starts_with('=')) {
                i += 1;
                continue;
            }
            return Some((term[..i].to_string(), term[i + op.len()..].to_string()));
        }
        i += 1;
    }
    None
}

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn name_and_namespace_terms_match_metadata() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns"}});
        assert!(
            FieldSelector::parse("metadata.name=a")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("metadata.name==a,metadata.namespace=ns")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !FieldSelector::parse("metadata.name!=a")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("metadata.namespace!=other")
                .unwrap()
                .matches(&obj)
        );
    }

    #[test]
    fn escaped_separators_are_part_of_the_value() {
        let obj = json!({"metadata": {"name": "a,b=c"}});
        let selector = FieldSelector::parse(r"metadata.name=a\,b\=c").unwrap();
        assert!(selector.matches(&obj));
    }

    #[test]
    fn a_term_without_operator_is_an_error() {
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
