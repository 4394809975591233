//! A small JSONPath evaluator for CRD `additionalPrinterColumns`.
//!
//! Supports what kubectl-style paths use in printer columns: `.a.b`,
//! `['key.with.dots']`, `a\.b` escapes, `[0]`, `[-1]`, `[1:3]`, `[*]`, `.*`,
//! `..name`, unions `[0,2]`, and filters `[?(@.type=="Ready")]` with
//! `== != < <= > >=` or bare existence `[?(@.x)]`. Missing keys yield no
//! result (upstream evaluates with AllowMissingKeys).

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    Field(String),
    Recursive(String),
    Index(i64),
    Slice(Option<i64>, Option<i64>, Option<i64>),
    Wildcard,
    Union(Vec<Seg>),
    Filter(Box<Filter>),
}

/// `?(@.path op operand)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Filter {
    left: Vec<Seg>,
    cmp: Option<(Op, Operand)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Value),
    Path(Vec<Seg>),
}

/// Parses a JSONPath such as `.status.conditions[?(@.type=="Ready")].status`
/// (optionally wrapped in `{}` and/or starting with `$`).
pub(crate) fn parse(expr: &str) -> Result<Vec<Seg>, String> {
    let mut e = expr.trim();
    if e.starts_with('{') && e.ends_with('}') && e.len() >= 2 {
        e = e[1..e.len() - 1].trim();
    }
    let e = e.strip_prefix('$').unwrap_or(e);
    let chars: Vec<char> = e.chars().collect();
    let mut segs = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' if chars.get(i + 1) == Some(&'.') => {
                i += 2;
                let (name, next) = read_ident(&chars, i);
                if name.is_empty() {
                    return Err(format!("missing name after '..' in {expr:?}"));
                }
                segs.push(Seg::Recursive(name));
                i = next;
            }
            '.' => {
                let (name, next) = read_ident(&chars, i + 1);
                match name.as_str() {
                    "" => {}
                    "*" => segs.push(Seg::Wildcard),
                    _ => segs.push(Seg::Field(name)),
                }
                i = next;
            }
            '[' => {
                let end =
                    find_close(&chars, i).ok_or_else(|| format!("unclosed '[' in {expr:?}"))?;
                let inner: String = chars[i + 1..end].iter().collect();
                segs.push(parse_bracket(inner.trim())?);
                i = end + 1;
            }
            c if c.is_whitespace() => i += 1,
            _ => {
                let (name, next) = read_ident(&chars, i);
                if name.is_empty() {
                    return Err(format!("unexpected {:?} in {expr:?}", chars[i]));
                }
                segs.push(if name == "*" {
                    Seg::Wildcard
                } else {
                    Seg::Field(name)
                });
                i = next;
            }
        }
    }
    Ok(segs)
}

/// Reads a field name up to `.` or `[`, honouring `\` escapes.
fn read_ident(chars: &[char], mut i: usize) -> (String, usize) {
    let mut out = String::new();
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                out.push(chars[i + 1]);
                i += 2;
            }
            '.' | '[' => break,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    (out.trim().to_string(), i)
}

/// Index of the `]` closing the `[` at `open`, skipping quotes and nesting.
fn find_close(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut i = open;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            if c == '\\' {
                i += 1;
            } else if c == q {
                quote = None;
            }
        } else {
            match c {
                '\'' | '"' => quote = Some(c),
                '[' | '(' => depth += 1,
                ']' | ')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 && c == ']' {
                        return Some(i);
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    let first = s.chars().next()?;
    if (first == '\'' || first == '"') && s.len() >= 2 && s.ends_with(first) {
        Some(s[1..s.len() - 1].replace(&format!("\\{first}"), &first.to_string()))
    } else {
        None
    }
}

fn parse_bracket(inner: &str) -> Result<Seg, String> {
    if inner == "*" {
        return Ok(Seg::Wildcard);
    }
    if let Some(body) = inner.strip_prefix('?') {
        let body = body.trim();
        let body = body
            .strip_prefix('(')
            .and_then(|b| b.strip_suffix(')'))
            .ok_or_else(|| format!("bad filter {inner:?}"))?;
        return Ok(Seg::Filter(Box::new(parse_filter(body.trim())?)));
    }
    let parts = split_top(inner, ',');
    if parts.len() > 1 {
        return parts
            .iter()
            .map(|p| parse_bracket(p.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(Seg::Union);
    }
    if let Some(name) = unquote(inner) {
        return Ok(Seg::Field(name));
    }
    if inner.contains(':') {
        let nums: Vec<&str> = inner.split(':').collect();
        if nums.len() > 3 {
            return Err(format!("bad slice {inner:?}"));
        }
        let num = |k: usize| -> Result<Option<i64>, String> {
            match nums.get(k).map(|s| s.trim()) {
                None | Some("") => Ok(None),
                Some(s) => s
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("bad slice {inner:?}")),
            }
        };
        return Ok(Seg::Slice(num(0)?, num(1)?, num(2)?));
    }
    inner
        .parse::<i64>()
        .map(Seg::Index)
        .map_err(|_| format!("bad index {inner:?}"))
}

/// Splits on `sep` outside quotes.
fn split_top(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == sep => {
                out.push(String::new());
                continue;
            }
            None => {}
        }
        if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

fn parse_filter(body: &str) -> Result<Filter, String> {
    let chars: Vec<char> = body.chars().collect();
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
        } else if c == '\'' || c == '"' {
            quote = Some(c);
        } else if matches!(c, '=' | '!' | '<' | '>') {
            let two = chars.get(i + 1) == Some(&'=');
            let op = match (c, two) {
                ('=', true) => Op::Eq,
                ('!', true) => Op::Ne,
                ('<', true) => Op::Le,
                ('>', true) => Op::Ge,
                ('<', false) => Op::Lt,
                ('>', false) => Op::Gt,
                _ => return Err(format!("bad operator in filter {body:?}")),
            };
            let left: String = chars[..i].iter().collect();
            let right: String = chars[i + if two { 2 } else { 1 }..].iter().collect();
            return Ok(Filter {
                left: parse_operand_path(left.trim())?,
                cmp: Some((op, parse_operand(right.trim())?)),
            });
        }
        i += 1;
    }
    Ok(Filter {
        left: parse_operand_path(body)?,
        cmp: None,
    })
}

fn parse_operand_path(s: &str) -> Result<Vec<Seg>, String> {
    let rest = s
        .strip_prefix('@')
        .ok_or_else(|| format!("filter path must start with '@': {s:?}"))?;
    parse(rest)
}

fn parse_operand(s: &str) -> Result<Operand, String> {
    if s.starts_with('@') {
        return parse_operand_path(s).map(Operand::Path);
    }
    if let Some(text) = unquote(s) {
        return Ok(Operand::Literal(Value::from(text)));
    }
    match s {
        "true" => return Ok(Operand::Literal(Value::Bool(true))),
        "false" => return Ok(Operand::Literal(Value::Bool(false))),
        "nil" | "null" => return Ok(Operand::Literal(Value::Null)),
        _ => {}
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(Operand::Literal(Value::from(n)));
    }
    if let Ok(f) = s.parse::<f64>() {
        return Ok(Operand::Literal(Value::from(f)));
    }
    Err(format!("bad filter operand {s:?}"))
}

/// All values the path selects, in document order.
pub(crate) fn find<'a>(segs: &[Seg], root: &'a Value) -> Vec<&'a Value> {
    let mut cur = vec![root];
    for seg in segs {
        let mut next = Vec::new();
        for v in cur {
            step(seg, v, &mut next);
        }
        cur = next;
        if cur.is_empty() {
            break;
        }
    }
    cur
}

fn step<'a>(seg: &Seg, v: &'a Value, out: &mut Vec<&'a Value>) {
    match seg {
        Seg::Field(name) => {
            if let Some(x) = v.as_object().and_then(|m| m.get(name)) {
                out.push(x);
            }
        }
        Seg::Recursive(name) => recurse(name, v, out),
        Seg::Index(i) => {
            if let Some(a) = v.as_array() {
                let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                if let Some(x) = usize::try_from(idx).ok().and_then(|k| a.get(k)) {
                    out.push(x);
                }
            }
        }
        Seg::Slice(start, end, step_by) => {
            if let Some(a) = v.as_array() {
                let len = a.len() as i64;
                let clamp = |x: i64| {
                    let x = if x < 0 { len + x } else { x };
                    x.clamp(0, len)
                };
                let s = clamp(start.unwrap_or(0));
                let e = clamp(end.unwrap_or(len));
                let by = step_by.unwrap_or(1).max(1);
                let mut k = s;
                while k < e {
                    if let Some(x) = usize::try_from(k).ok().and_then(|k| a.get(k)) {
                        out.push(x);
                    }
                    k += by;
                }
            }
        }
        Seg::Wildcard => match v {
            Value::Array(a) => out.extend(a.iter()),
            Value::Object(m) => out.extend(m.values()),
            _ => {}
        },
        Seg::Union(parts) => {
            for p in parts {
                step(p, v, out);
            }
        }
        Seg::Filter(f) => {
            if let Some(a) = v.as_array() {
                out.extend(a.iter().filter(|item| f.matches(item)));
            }
        }
    }
}

fn recurse<'a>(name: &str, v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            if name == "*" {
                out.extend(m.values());
            } else if let Some(x) = m.get(name) {
                out.push(x);
            }
            for child in m.values() {
                recurse(name, child, out);
            }
        }
        Value::Array(a) => {
            if name == "*" {
                out.extend(a.iter());
            }
            for child in a {
                recurse(name, child, out);
            }
        }
        _ => {}
    }
}

impl Filter {
    fn matches(&self, item: &Value) -> bool {
        let lefts = find(&self.left, item);
        let Some((op, operand)) = &self.cmp else {
            return !lefts.is_empty();
        };
        let Some(left) = lefts.first() else {
            return false;
        };
        let right = match operand {
            Operand::Literal(v) => v,
            Operand::Path(p) => match find(p, item).first() {
                Some(r) => *r,
                None => return false,
            },
        };
        compare(left, *op, right)
    }
}

fn compare(l: &Value, op: Op, r: &Value) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (l, r) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => a
                .as_f64()
                .zip(b.as_f64())
                .and_then(|(x, y)| x.partial_cmp(&y)),
        },
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    };
    match (op, ord) {
        (Op::Eq, Some(o)) => o == Ordering::Equal,
        (Op::Ne, Some(o)) => o != Ordering::Equal,
        (Op::Ne, None) => true,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(path: &str, doc: &Value) -> Vec<Value> {
        find(&parse(path).unwrap(), doc)
            .into_iter()
            .cloned()
            .collect()
    }

    fn doc() -> Value {
        json!({
            "metadata": {"name": "x", "labels": {"app.kubernetes.io/name": "demo"}},
            "spec": {"replicas": 3, "ports": [{"port": 80}, {"port": 443}, {"port": 8080}]},
            "status": {"conditions": [
                {"type": "Synced", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "Waiting"}
            ]}
        })
    }

    #[test]
    fn simple_fields_and_missing_keys() {
        assert_eq!(eval(".spec.replicas", &doc()), vec![json!(3)]);
        assert_eq!(eval("{.spec.replicas}", &doc()), vec![json!(3)]);
        assert_eq!(eval("$.metadata.name", &doc()), vec![json!("x")]);
        assert!(eval(".spec.missing.deeper", &doc()).is_empty());
    }

    #[test]
    fn indexes_slices_wildcards_unions() {
        assert_eq!(eval(".spec.ports[0].port", &doc()), vec![json!(80)]);
        assert_eq!(eval(".spec.ports[-1].port", &doc()), vec![json!(8080)]);
        assert_eq!(
            eval(".spec.ports[1:].port", &doc()),
            vec![json!(443), json!(8080)]
        );
        assert_eq!(eval(".spec.ports[*].port", &doc()).len(), 3);
        assert_eq!(
            eval(".spec.ports[0,2].port", &doc()),
            vec![json!(80), json!(8080)]
        );
        assert!(eval(".spec.ports[7].port", &doc()).is_empty());
    }

    #[test]
    fn filter_equality_and_existence() {
        assert_eq!(
            eval(r#".status.conditions[?(@.type=="Ready")].status"#, &doc()),
            vec![json!("False")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.type == 'Synced')].status", &doc()),
            vec![json!("True")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.reason)].type", &doc()),
            vec![json!("Ready")]
        );
        assert_eq!(
            eval(".spec.ports[?(@.port>100)].port", &doc()),
            vec![json!(443), json!(8080)]
        );
        assert_eq!(
            eval(".status.conditions[?(@.type!=\"Ready\")].type", &doc()),
            vec![json!("Synced")]
        );
    }

    #[test]
    fn quoted_and_escaped_keys_and_recursive_descent() {
        assert_eq!(
            eval(".metadata.labels['app.kubernetes.io/name']", &doc()),
            vec![json!("demo")]
        );
        assert_eq!(
            eval(r".metadata.labels.app\.kubernetes\.io/name", &doc()),
            vec![json!("demo")]
        );
        assert_eq!(eval("..port", &doc()).len(), 3);
    }

    #[test]
    fn malformed_paths_are_errors() {
        assert!(parse(".a[").is_err());
        assert!(parse(".a[?(@.b=)]").is_err());
        assert!(parse(".a[x]").is_err());
    }
}
