//! The full label-selector grammar: `=`, `==`, `!=`, `in`, `notin`, exists, `!key`,
//! and the numeric `>`/`<` the Go parser also accepts.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq,
    NotEq,
    In,
    NotIn,
    Exists,
    NotExists,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Not,
    Eq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

fn lex(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {}
            ',' => tokens.push(Token::Comma),
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            '>' => tokens.push(Token::Gt),
            '<' => tokens.push(Token::Lt),
            '=' => {
                if chars.peek() == Some(&'=') {
                    chars.next();
                }
                tokens.push(Token::Eq);
            }
            '!' => {
                if chars.peek() == Some(&'=') {
                    chars.next();
                    tokens.push(Token::NotEq);
                } else {
                    tokens.push(Token::Not);
                }
            }
            c if is_word_char(c) => {
                let mut word = c.to_string();
                while let Some(&next) = chars.peek().filter(|n| is_word_char(**n)) {
                    word.push(next);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
            other => {
                return Err(format!(
                    "unable to parse requirement: invalid character {other:?}"
                ));
            }
        }
    }
    Ok(tokens)
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

impl LabelSelector {
    /// Parses `input`; an error message worded for a 400.
    pub fn parse(input: &str) -> Result<Self, String> {
        let tokens = lex(input)?;
        let mut parser = Parser { tokens, pos: 0 };
        let mut requirements = Vec::new();
        if parser.tokens.is_empty() {
            return Ok(Self(requirements));
        }
        loop {
            requirements.push(parser.requirement()?);
            match parser.next() {
                None => break,
                Some(Token::Comma) => continue,
                Some(other) => {
                    return Err(format!(
                        "found '{other:?}', expected: ',' or 'end of string'"
                    ));
                }
            }
        }
        Ok(Self(requirements))
    }

    /// Whether an object with these labels matches.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|r| {
            let value = get(&r.key);
            match r.op {
                Op::Eq | Op::In => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
                Op::NotEq | Op::NotIn => value.is_none_or(|v| r.values.iter().all(|x| x != v)),
                Op::Exists => value.is_some(),
                Op::NotExists => value.is_none(),
                Op::Gt | Op::Lt => {
                    let (Some(v), Some(bound)) = (
                        value.and_then(|v| v.parse::<i64>().ok()),
                        r.values.first().and_then(|b| b.parse::<i64>().ok()),
                    ) else {
                        return false;
                    };
                    if r.op == Op::Gt { v > bound } else { v < bound }
                }
            }
        })
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let negated = self.peek() == Some(&Token::Not);
        if negated {
            self.pos += 1;
        }
        let key = match self.next() {
            Some(Token::Word(key)) => key,
            other => return Err(format!("found '{other:?}', expected: identifier")),
        };
        if negated {
            return Ok(Requirement {
                key,
                op: Op::NotExists,
                values: Vec::new(),
            });
        }
        let op = match self.peek() {
            None | Some(Token::Comma) => {
                return Ok(Requirement {
                    key,
                    op: Op::Exists,
                    values: Vec::new(),
                });
            }
            Some(Token::Eq) => Op::Eq,
            Some(Token::NotEq) => Op::NotEq,
            Some(Token::Gt) => Op::Gt,
            Some(Token::Lt) => Op::Lt,
            Some(Token::Word(w)) if w == "in" => Op::In,
            Some(Token::Word(w)) if w == "notin" => Op::NotIn,
            Some(other) => {
                return Err(format!(
                    "found '{other:?}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        };
        self.pos += 1;
        let values = match op {
            Op::In | Op::NotIn => self.value_set()?,
            _ => vec![self.single_value()],
        };
        Ok(Requirement { key, op, values })
    }

    /// A value after `=`: possibly empty (`a=` selects the empty value).
    fn single_value(&mut self) -> String {
        match self.peek() {
            Some(Token::Word(w)) => {
                let w = w.clone();
                self.pos += 1;
                w
            }
            _ => String::new(),
        }
    }

    fn value_set(&mut self) -> Result<Vec<String>, String> {
        if self.next() != Some(Token::Open) {
            return Err("found no '(', expected: '(' after set operator".into());
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Some(Token::Word(w)) => values.push(w),
                Some(Token::Comma) => {}
                Some(Token::Close) => return Ok(values),
                other => {
                    return Err(format!(
                        "found '{other:?}', expected: ',', ')' or identifier"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn matches(selector: &str, labels: Value) -> bool {
        LabelSelector::parse(selector)
            .unwrap()
            .matches(labels.as_object())
    }

    #[test]
    fn equality_and_inequality_requirements() {
        let labels = json!({"app": "kcache", "tier": "cache"});
        assert!(matches("app=kcache", labels.clone()));
        assert!(matches("app==kcache,tier=cache", labels.clone()));
        assert!(!matches("app!=kcache", labels.clone()));
        assert!(matches("other!=x", labels.clone()));
    }

    #[test]
    fn set_requirements_and_existence() {
        let labels = json!({"app": "kcache", "env": "prod"});
        assert!(matches("env in (prod, dev)", labels.clone()));
        assert!(!matches("env notin (prod,dev)", labels.clone()));
        assert!(matches("missing notin (a)", labels.clone()));
        assert!(matches("app", labels.clone()));
        assert!(matches("!missing", labels.clone()));
        assert!(!matches("!app", labels.clone()));
        assert!(matches("app,env in (prod),!x", labels));
    }

    #[test]
    fn numeric_comparisons_and_empty_values() {
        assert!(matches("n>3", json!({"n": "5"})));
        assert!(!matches("n<3", json!({"n": "5"})));
        assert!(matches("a=", json!({"a": ""})));
        assert!(matches("", json!({})));
    }

    #[test]
    fn malformed_selectors_are_errors() {
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("a=b=c").is_err());
        assert!(LabelSelector::parse("a%b").is_err());
    }
}
