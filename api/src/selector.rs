//! Label and field selectors, parsed and matched as Kubernetes does
//! (`k8s.io/apimachinery/pkg/labels` and `pkg/fields`), including the wording
//! of parse errors, so `kubectl get -l ...` reports the same problems it would
//! against a real cluster.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as LabelSelectorObject;
use serde_json::Value;

/// The labels of an object (`metadata.labels`); non-string values are skipped
/// because a label map of any other shape is invalid and never stored.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Validates like Kubernetes' `NewRequirement`, whose field errors are
    /// rooted at `key` and `values`.
    fn new(key: &str, op: Operator, values: Vec<String>) -> Result<Self, String> {
        let mut errs = Vec::new();
        if let Some(e) = validate_label_key(key, "key") {
            errs.push(e);
        }
        let values_path = "values";
        let list = || format!("[]string{{{}}}", values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", "));
        match op {
            Operator::In | Operator::NotIn if values.is_empty() => {
                errs.push(format!("{values_path}: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty", list()))
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => {
                errs.push(format!("{values_path}: Invalid value: {}: exact-match compatibility requires one single value", list()))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errs.push(format!("{values_path}: Invalid value: {}: values set must be empty for exists and does not exist", list()))
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(format!("{values_path}: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required", list()));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(format!(
                            "{values_path}[{i}]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let problems = label_value_errors(v);
            if !problems.is_empty() {
                errs.push(format!("{values_path}[{i}][{key}]: Invalid value: {v:?}: {}", problems.join("; ")));
            }
        }
        match errs.len() {
            0 => Ok(Self { key: key.to_string(), op, values }),
            1 => Err(errs.remove(0)),
            _ => Err(format!("[{}]", errs.join(", "))),
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let got = labels.get(&self.key);
        match self.op {
            Operator::In | Operator::Equals | Operator::DoubleEquals => got.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn | Operator::NotEquals => got.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(Ok(have)), [want]) = (got.map(|v| v.parse::<i64>()), self.values.as_slice()) else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else { return false };
                if self.op == Operator::GreaterThan { have > want } else { have < want }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.op {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        // Values print sorted so equal selectors have one canonical string.
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        let set = matches!(self.op, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        f.write_str(&values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Whether a plain map selector (Service/RC `spec.selector`) selects an
/// object with `labels`: every pair must match, and an empty map selects
/// nothing, as Kubernetes treats these selectors. Allocation-free, for hot
/// paths such as the scheduler's spreading.
pub fn map_selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A label selector: all requirements must hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key, as Kubernetes keeps them, so `Display` is canonical.
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query string: `a=b`, `a==b`, `a!=b`,
    /// `a in (x,y)`, `a notin (x,y)`, `a` (exists), `!a` (does not exist),
    /// `a>1`, `a<1`, comma-separated (AND). The empty string matches
    /// everything. Keys must be qualified names and values valid label values;
    /// errors carry Kubernetes' wording (`unable to parse requirement: ...`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let tokens = lex(s);
        let mut p = Parser { tokens, pos: 0 };
        let mut requirements = p.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// From a `LabelSelector` object (`matchLabels` + `matchExpressions` with
    /// `In`/`NotIn`/`Exists`/`DoesNotExist`), as `LabelSelectorAsSelector`:
    /// an object with neither matches everything. Unknown operators and
    /// invalid keys or values are errors.
    pub fn from_object(sel: &LabelSelectorObject) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::new(k, Operator::Equals, vec![v.clone()])?);
        }
        for expr in sel.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            requirements.push(Requirement::new(&expr.key, op, expr.values.clone().unwrap_or_default())?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// From a plain map selector (Service/RC `spec.selector`): every key must
    /// equal its value. Like Kubernetes' `SelectorFromSet`, an empty map gives
    /// a selector that matches everything; callers for which an empty
    /// selector means "nothing" (Services, RCs) check `is_empty` themselves.
    /// Entries are not validated, matching `SelectorFromSet`: the map was
    /// already validated as part of the object that carries it.
    pub fn from_map(m: &BTreeMap<String, String>) -> Self {
        let requirements = m.iter().map(|(k, v)| Requirement { key: k.clone(), op: Operator::Equals, values: vec![v.clone()] }).collect();
        Self { requirements }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when there are no requirements, i.e. it matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    End,
    Error(String),
    Identifier(String),
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

impl Token {
    fn literal(&self) -> &str {
        match self {
            Token::End => "",
            Token::Error(s) | Token::Identifier(s) => s,
            Token::ClosedPar => ")",
            Token::Comma => ",",
            Token::DoesNotExist => "!",
            Token::DoubleEquals => "==",
            Token::Equals => "=",
            Token::GreaterThan => ">",
            Token::In => "in",
            Token::LessThan => "<",
            Token::NotEquals => "!=",
            Token::NotIn => "notin",
            Token::OpenPar => "(",
        }
    }

    fn keyword(s: &str) -> Option<Token> {
        Some(match s {
            ")" => Token::ClosedPar,
            "," => Token::Comma,
            "!" => Token::DoesNotExist,
            "==" => Token::DoubleEquals,
            "=" => Token::Equals,
            ">" => Token::GreaterThan,
            "in" => Token::In,
            "<" => Token::LessThan,
            "!=" => Token::NotEquals,
            "notin" => Token::NotIn,
            "(" => Token::OpenPar,
            _ => return None,
        })
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// Kubernetes' selector lexer: identifiers run until whitespace or a special
/// symbol; runs of special symbols are split greedily into known operators.
fn lex(s: &str) -> Vec<Token> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < chars.len() && matches!(chars[i], ' ' | '\t' | '\r' | '\n') {
            i += 1;
        }
        if i >= chars.len() {
            out.push(Token::End);
            return out;
        }
        if is_special(chars[i]) {
            let mut buf = String::new();
            let mut last: Option<Token> = None;
            while i < chars.len() && is_special(chars[i]) {
                buf.push(chars[i]);
                if let Some(t) = Token::keyword(&buf) {
                    last = Some(t);
                    i += 1;
                } else if last.is_some() {
                    break;
                } else {
                    i += 1;
                }
            }
            out.push(last.unwrap_or_else(|| Token::Error(format!("error expected: keyword found '{buf}'"))));
        } else {
            let start = i;
            while i < chars.len() && !is_special(chars[i]) && !matches!(chars[i], ' ' | '\t' | '\r' | '\n') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(Token::keyword(&word).unwrap_or(Token::Identifier(word)));
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

/// Whether `in`/`notin` are keywords (after a key) or plain identifiers
/// (where values are expected), as in Kubernetes' parser contexts.
#[derive(Clone, Copy, PartialEq)]
enum Context {
    KeyAndOperator,
    Values,
}

impl Parser {
    fn lookahead(&self, ctx: Context) -> Token {
        let t = self.tokens[self.pos.min(self.tokens.len() - 1)].clone();
        match t {
            Token::In | Token::NotIn if ctx == Context::Values => Token::Identifier(t.literal().to_string()),
            t => t,
        }
    }

    fn consume(&mut self, ctx: Context) -> Token {
        let t = self.lookahead(ctx);
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            match self.lookahead(Context::Values) {
                Token::Identifier(_) | Token::DoesNotExist => {
                    let r = self.parse_requirement().map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    match self.consume(Context::Values) {
                        Token::End => return Ok(reqs),
                        Token::Comma => {
                            let t = self.lookahead(Context::Values);
                            if !matches!(t, Token::Identifier(_) | Token::DoesNotExist) {
                                return Err(format!("found '{}', expected: identifier after ','", t.literal()));
                            }
                        }
                        t => return Err(format!("found '{}', expected: ',' or 'end of string'", t.literal())),
                    }
                }
                Token::End => return Ok(reqs),
                t => return Err(format!("found '{}', expected: !, identifier, or 'end of string'", t.literal())),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(op) = inferred {
            return Requirement::new(&key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, op, values)
    }

    /// Returns the key and, when no binary operator follows, the unary
    /// operator it implies (`a` → exists, `!a` → does not exist).
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut tok = self.consume(Context::Values);
        let negated = tok == Token::DoesNotExist;
        if negated {
            tok = self.consume(Context::Values);
        }
        let Token::Identifier(key) = tok else {
            return Err(format!("found '{}', expected: identifier", tok.literal()));
        };
        if let Some(e) = validate_label_key(&key, "<nil>") {
            return Err(e);
        }
        if negated {
            // `!a=b` yields `!a` and leaves `=b` to fail as trailing input,
            // as in Kubernetes.
            return Ok((key, Some(Operator::DoesNotExist)));
        }
        let ends = matches!(self.lookahead(Context::Values), Token::End | Token::Comma);
        Ok((key, ends.then_some(Operator::Exists)))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        Ok(match self.consume(Context::KeyAndOperator) {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            t => return Err(format!("found '{}', expected: in, notin, =, ==, !=, gt, lt", t.literal())),
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let t = self.consume(Context::Values);
        if t != Token::OpenPar {
            return Err(format!("found '{}' expected: '('", t.literal()));
        }
        let t = self.lookahead(Context::Values);
        match t {
            Token::Identifier(_) | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                if self.consume(Context::Values) != Token::ClosedPar {
                    return Err(format!("found '{}', expected: ')'", t.literal()));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            t => Err(format!("found '{}', expected: ',', ')' or identifier", t.literal())),
        }
    }

    /// A set of values: duplicates collapse and empty entries (`(,a)`) count
    /// as the empty string, as Kubernetes' `sets.String` does.
    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut set = std::collections::BTreeSet::new();
        loop {
            match self.consume(Context::Values) {
                Token::Identifier(v) => {
                    set.insert(v);
                    match self.lookahead(Context::Values) {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(set.into_iter().collect()),
                        t => return Err(format!("found '{}', expected: ',' or ')'", t.literal())),
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    match self.lookahead(Context::Values) {
                        Token::ClosedPar => {
                            set.insert(String::new());
                            return Ok(set.into_iter().collect());
                        }
                        Token::Comma => {
                            self.consume(Context::Values);
                            set.insert(String::new());
                        }
                        _ => {}
                    }
                }
                t => return Err(format!("found '{}', expected: ',', or identifier", t.literal())),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        if matches!(self.lookahead(Context::Values), Token::End | Token::Comma) {
            return Ok(vec![String::new()]);
        }
        match self.consume(Context::Values) {
            Token::Identifier(v) => Ok(vec![v]),
            t => Err(format!("found '{}', expected: identifier", t.literal())),
        }
    }
}

/// `field: Invalid value: "k": ...` when `k` is not a qualified name.
fn validate_label_key(key: &str, field: &str) -> Option<String> {
    let errs = qualified_name_errors(key);
    (!errs.is_empty()).then(|| format!("{field}: Invalid value: {key:?}: {}", errs.join("; ")))
}

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let ex = examples.iter().map(|e| format!("'{e}', ")).collect::<Vec<_>>().join(" or ");
    format!("{msg} (e.g. {ex}regex used for validation is '{fmt}')")
}

const QNAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QNAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    })
}

/// Kubernetes' `IsQualifiedName`: `[prefix/]name`, prefix a DNS subdomain,
/// name at most 63 characters.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errs.push("prefix part must be no more than 253 characters".to_string());
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push(format!(
                        "prefix part {}",
                        regex_error(
                            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                            "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
                            &["example.com"],
                        )
                    ));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QNAME_MSG, QNAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        errs.push(format!("name part {}", regex_error(QNAME_MSG, QNAME_FMT, &["MyName", "my.name", "123-abc"])));
    }
    errs
}

/// Kubernetes' `IsValidLabelValue`: empty, or a qualified-name part of at
/// most 63 characters.
fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// One `field=value` or `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    value: String,
    equal: bool,
}

/// A field selector: all terms must hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses `fieldSelector`: comma-separated `field=value`, `field==value`,
    /// `field!=value`. Values may escape `\,` `\=` `\\`; an unescaped `,` or
    /// `=` inside a value, or any other escape, is an error. The empty string
    /// matches everything.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = split_terms(s);
        // Sorted like Kubernetes so `Display` is canonical.
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, rhs)) = split_term(part) else {
                return Err(format!("invalid selector: '{s}'; can't understand '{part}'"));
            };
            terms.push(FieldTerm { field: field.to_string(), value: unescape_value(rhs)?, equal: op != "!=" });
        }
        Ok(Self { terms })
    }

    /// The field names used, so the server can reject unsupported ones with
    /// 400 (`field label not supported: X`).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    /// `get(field)` returns the object's value of that field; `None` (absent)
    /// compares as the empty string, as Kubernetes' `fields.Set` does.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|t| (get(&t.field).unwrap_or_default() == t.value) == t.equal)
    }

    /// The name pinned by an equality on `metadata.name`, if any, so the server
    /// can answer with a direct get.
    pub fn exact_name(&self) -> Option<&str> {
        self.terms.iter().find(|t| t.equal && t.field == "metadata.name").map(|t| t.value.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let escaped = t.value.replace('\\', "\\\\").replace(',', "\\,").replace('=', "\\=");
            write!(f, "{}{}{escaped}", t.field, if t.equal { "=" } else { "!=" })?;
        }
        Ok(())
    }
}

/// Splits on commas not escaped by a backslash; escapes stay in the terms.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits at the first operator; `!=` and `==` are tried before `=` so the
/// value never keeps a stray `=`.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        for op in ["!=", "==", "="] {
            if term[i..].starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(format!("invalid field selector: invalid escape sequence: \\{c}"));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Kubernetes prints the rune's code point here; the character
            // itself tells the user more.
            ',' | '=' => return Err(format!("invalid field selector: unescaped character in value: {c}")),
            c => out.push(c),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn empty_label_selector_matches_everything() {
        let s = LabelSelector::parse("").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
        assert_eq!(s.to_string(), "");
    }

    #[test]
    fn equality_operators_match_value() {
        for sel in ["app=web", "app==web", " app = web "] {
            let s = LabelSelector::parse(sel).unwrap();
            assert!(s.matches(&labels(&[("app", "web")])), "{sel}");
            assert!(!s.matches(&labels(&[("app", "db")])), "{sel}");
            assert!(!s.matches(&labels(&[])), "{sel}");
        }
    }

    #[test]
    fn not_equals_matches_missing_label() {
        let s = LabelSelector::parse("app!=web").unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("app", "db")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn set_operators_and_existence() {
        let s = LabelSelector::parse("env in (prod, staging),tier notin (db),app,!legacy").unwrap();
        assert!(s.matches(&labels(&[("env", "prod"), ("tier", "web"), ("app", "x")])));
        assert!(s.matches(&labels(&[("env", "staging"), ("app", "")])));
        assert!(!s.matches(&labels(&[("env", "dev"), ("app", "x")])));
        assert!(!s.matches(&labels(&[("env", "prod"), ("tier", "db"), ("app", "x")])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
        assert!(!s.matches(&labels(&[("env", "prod"), ("app", "x"), ("legacy", "y")])));
    }

    #[test]
    fn in_and_notin_are_values_inside_parentheses() {
        let s = LabelSelector::parse("x in (in,notin)").unwrap();
        assert!(s.matches(&labels(&[("x", "notin")])));
    }

    #[test]
    fn greater_and_less_than_compare_integers() {
        let s = LabelSelector::parse("gen>3,gen<10").unwrap();
        assert!(s.matches(&labels(&[("gen", "5")])));
        assert!(!s.matches(&labels(&[("gen", "3")])));
        assert!(!s.matches(&labels(&[("gen", "abc")])));
        assert!(LabelSelector::parse("gen>abc").unwrap_err().contains("the value must be an integer"));
    }

    #[test]
    fn display_is_canonical_sorted_form() {
        let s = LabelSelector::parse("z notin (b,a), !y, a==1,m in (q)").unwrap();
        assert_eq!(s.to_string(), "a==1,m in (q),!y,z notin (a,b)");
        assert_eq!(LabelSelector::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn invalid_key_reports_kubernetes_wording() {
        let e = LabelSelector::parse("app:monolith").unwrap_err();
        assert_eq!(
            e,
            "unable to parse requirement: <nil>: Invalid value: \"app:monolith\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        let e = LabelSelector::parse("App.kubernetes.io/name=x").unwrap_err();
        assert!(e.contains("prefix part a lowercase RFC 1123 subdomain"), "{e}");
    }

    #[test]
    fn invalid_value_is_rejected() {
        let long = "a".repeat(64);
        let e = LabelSelector::parse(&format!("app={long}")).unwrap_err();
        assert!(e.starts_with("unable to parse requirement: values[0][app]: Invalid value:"), "{e}");
        assert!(e.contains("must be no more than 63 characters"), "{e}");
        assert!(LabelSelector::parse("app=a b").is_err());
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert_eq!(LabelSelector::parse("a=b,").unwrap_err(), "found '', expected: identifier after ','");
        assert_eq!(LabelSelector::parse("a in b").unwrap_err(), "unable to parse requirement: found 'b' expected: '('");
        assert!(LabelSelector::parse("a in (b").unwrap_err().contains("expected: ',' or ')'"));
        assert!(LabelSelector::parse("=b").unwrap_err().contains("expected: !, identifier, or 'end of string'"));
        assert_eq!(LabelSelector::parse("!a=b").unwrap_err(), "found '=', expected: ',' or 'end of string'");
        assert!(LabelSelector::parse("a b").unwrap_err().contains("expected: in, notin, =, ==, !=, gt, lt"));
    }

    #[test]
    fn from_object_combines_labels_and_expressions() {
        let obj = LabelSelectorObject {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "In".into(),
                values: Some(vec!["prod".into(), "dev".into()]),
            }]),
        };
        let s = LabelSelector::from_object(&obj).unwrap();
        assert_eq!(s.to_string(), "app=web,env in (dev,prod)");
        assert!(s.matches(&labels(&[("app", "web"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(LabelSelector::from_object(&LabelSelectorObject::default()).unwrap().matches(&labels(&[("x", "y")])));
    }

    #[test]
    fn from_object_rejects_unknown_operator_and_empty_in() {
        let bad = |op: &str, values: Option<Vec<String>>| LabelSelectorObject {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement { key: "k".into(), operator: op.into(), values }]),
        };
        assert_eq!(
            LabelSelector::from_object(&bad("Gt", Some(vec!["1".into()]))).unwrap_err(),
            "\"Gt\" is not a valid label selector operator"
        );
        let e = LabelSelector::from_object(&bad("In", None)).unwrap_err();
        assert!(e.contains("values set can't be empty"), "{e}");
        let e = LabelSelector::from_object(&bad("Exists", Some(vec!["x".into()]))).unwrap_err();
        assert!(e.contains("values set must be empty"), "{e}");
    }

    #[test]
    fn from_map_requires_every_pair_and_empty_map_matches_all() {
        let s = LabelSelector::from_map(&labels(&[("app", "web"), ("tier", "fe")]));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        let empty = LabelSelector::from_map(&BTreeMap::new());
        assert!(empty.is_empty() && empty.matches(&labels(&[])));
    }

    #[test]
    fn labels_of_reads_metadata_labels() {
        let obj = serde_json::json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        assert_eq!(labels_of(&obj), labels(&[("a", "1"), ("b", "2")]));
        assert!(labels_of(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn field_selector_equality_and_inequality() {
        let s = FieldSelector::parse("metadata.name=web,status.phase!=Running").unwrap();
        let obj = |name: &str, phase: &str| {
            let (name, phase) = (name.to_string(), phase.to_string());
            move |f: &str| match f {
                "metadata.name" => Some(name.clone()),
                "status.phase" => Some(phase.clone()),
                _ => None,
            }
        };
        assert!(s.matches(obj("web", "Pending")));
        assert!(!s.matches(obj("web", "Running")));
        assert!(!s.matches(obj("db", "Pending")));
        assert_eq!(s.fields().collect::<Vec<_>>(), ["metadata.name", "status.phase"]);
    }

    #[test]
    fn field_selector_absent_field_is_empty_string() {
        let s = FieldSelector::parse("spec.nodeName=").unwrap();
        assert!(s.matches(|_| None));
        let s = FieldSelector::parse("spec.nodeName!=").unwrap();
        assert!(!s.matches(|_| None));
        assert!(s.matches(|_| Some("node1".into())));
    }

    #[test]
    fn field_selector_unescapes_values() {
        let s = FieldSelector::parse(r"metadata.name==a\,b\=c\\d,spec.x=y").unwrap();
        assert_eq!(s.exact_name(), Some(r"a,b=c\d"));
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d,spec.x=y");
        assert_eq!(FieldSelector::parse(r"a=b\x").unwrap_err(), r"invalid field selector: invalid escape sequence: \x");
        assert_eq!(FieldSelector::parse("a=b=c").unwrap_err(), "invalid field selector: unescaped character in value: =");
        assert_eq!(FieldSelector::parse("abc").unwrap_err(), "invalid selector: 'abc'; can't understand 'abc'");
    }

    #[test]
    fn field_selector_empty_matches_everything_and_has_no_exact_name() {
        let s = FieldSelector::parse("").unwrap();
        assert!(s.is_empty() && s.matches(|_| None) && s.exact_name().is_none());
        assert!(FieldSelector::parse("metadata.name!=x").unwrap().exact_name().is_none());
    }
}
