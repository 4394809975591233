//! A LogQL subset: a stream selector `{a="b", c=~"d.*", e!="f", g!~"h"}` followed by line filters
//! `|= "x"`, `!= "x"`, `|~ "re"`, `!~ "re"`. Strings are Go-style double-quoted (with escapes) or
//! backquoted (raw). Errors carry the byte position and read like Loki's
//! (`parse error at line 1, col 7: ...`).

use crate::{LabelMatcher, LineFilter, MatchOp};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parse error at line {line}, col {column}: {message}")]
pub struct LogQlError {
    /// Byte offset of the error in the query.
    pub position: usize,
    /// 1-based line and column (in characters) of the error, as Loki reports them.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl LogQlError {
    pub(crate) fn at(q: &str, position: usize, message: impl Into<String>) -> LogQlError {
        let position = position.min(q.len());
        let before = &q[..position];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        LogQlError {
            position,
            line,
            column,
            message: message.into(),
        }
    }
}

struct Parser<'a> {
    q: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, at: usize, message: impl Into<String>) -> LogQlError {
        LogQlError::at(self.q, at, message)
    }

    fn rest(&self) -> &'a str {
        &self.q[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.q.len() - trimmed.len();
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn describe_here(&self) -> String {
        match self.rest().chars().next() {
            None => "end of input".to_string(),
            Some(c) => format!("{c:?}"),
        }
    }

    fn ident(&mut self) -> Result<String, LogQlError> {
        self.skip_ws();
        let start = self.pos;
        let mut end = start;
        for (i, c) in self.rest().char_indices() {
            let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
            if !ok {
                break;
            }
            end = start + i + c.len_utf8();
        }
        if end == start {
            return Err(self.err(
                start,
                format!(
                    "syntax error: unexpected {}, expecting a label name",
                    self.describe_here()
                ),
            ));
        }
        self.pos = end;
        Ok(self.q[start..end].to_string())
    }

    fn string(&mut self) -> Result<String, LogQlError> {
        self.skip_ws();
        let start = self.pos;
        let mut chars = self.rest().char_indices();
        match chars.next() {
            Some((_, '`')) => {
                for (i, c) in chars {
                    if c == '`' {
                        let s = self.q[start + 1..start + i].to_string();
                        self.pos = start + i + 1;
                        return Ok(s);
                    }
                }
                Err(self.err(start, "syntax error: unterminated raw string"))
            }
            Some((_, '"')) => {
                let mut out = String::new();
                let mut chars = chars.peekable();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '"' => {
                            self.pos = start + i + 1;
                            return Ok(out);
                        }
                        '\\' => {
                            let Some((j, e)) = chars.next() else { break };
                            match e {
                                '"' => out.push('"'),
                                '\\' => out.push('\\'),
                                '\'' => out.push('\''),
                                'n' => out.push('\n'),
                                't' => out.push('\t'),
                                'r' => out.push('\r'),
                                'a' => out.push('\x07'),
                                'b' => out.push('\x08'),
                                'f' => out.push('\x0c'),
                                'v' => out.push('\x0b'),
                                'x' | 'u' | 'U' => {
                                    let n = match e {
                                        'x' => 2,
                                        'u' => 4,
                                        _ => 8,
                                    };
                                    let mut hex = String::new();
                                    for _ in 0..n {
                                        match chars.next() {
                                            Some((_, h)) if h.is_ascii_hexdigit() => hex.push(h),
                                            _ => {
                                                return Err(self.err(
                                                    start + j,
                                                    "syntax error: invalid escape in string",
                                                ))
                                            }
                                        }
                                    }
                                    let v =
                                        u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                                    match v {
                                        Some(ch) => out.push(ch),
                                        None => {
                                            return Err(self.err(
                                                start + j,
                                                "syntax error: invalid escape in string",
                                            ))
                                        }
                                    }
                                }
                                _ => {
                                    return Err(self.err(
                                        start + j,
                                        format!("syntax error: unknown escape \\{e} in string"),
                                    ))
                                }
                            }
                        }
                        '\n' => break,
                        c => out.push(c),
                    }
                }
                Err(self.err(start, "syntax error: unterminated string"))
            }
            _ => Err(self.err(
                start,
                format!(
                    "syntax error: unexpected {}, expecting a string",
                    self.describe_here()
                ),
            )),
        }
    }
}

fn check_regex(p: &Parser<'_>, at: usize, re: &str) -> Result<(), LogQlError> {
    regex::Regex::new(re).map(|_| ()).map_err(|e| {
        p.err(
            at,
            format!(
                "invalid regular expression {re:?}: {}",
                e.to_string().lines().last().unwrap_or("")
            ),
        )
    })
}

/// Parses a LogQL log query of the supported subset into label matchers and line filters.
pub fn parse_logql(q: &str) -> Result<(Vec<LabelMatcher>, Vec<LineFilter>), LogQlError> {
    let mut p = Parser { q, pos: 0 };
    if !p.eat("{") {
        let at = p.pos;
        let word: String = p
            .rest()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !word.is_empty() && p.rest()[word.len()..].trim_start().starts_with(['(', ' ']) {
            return Err(p.err(at, format!("metric queries ({word}) are not supported: mini answers log queries (a stream selector and line filters)")));
        }
        return Err(p.err(
            at,
            format!(
                "syntax error: unexpected {}, expecting {{",
                p.describe_here()
            ),
        ));
    }
    let open_at = p.pos - 1;
    let mut matchers = Vec::new();
    loop {
        if p.eat("}") {
            break;
        }
        let name = p.ident()?;
        p.skip_ws();
        let op_at = p.pos;
        let op = if p.eat("=~") {
            MatchOp::Regex
        } else if p.eat("!~") {
            MatchOp::NotRegex
        } else if p.eat("!=") {
            MatchOp::NotEqual
        } else if p.eat("=") {
            MatchOp::Equal
        } else {
            return Err(p.err(
                op_at,
                format!(
                    "syntax error: unexpected {}, expecting = or != or =~ or !~",
                    p.describe_here()
                ),
            ));
        };
        p.skip_ws();
        let value_at = p.pos;
        let value = p.string()?;
        if matches!(op, MatchOp::Regex | MatchOp::NotRegex) {
            check_regex(&p, value_at, &value)?;
        }
        matchers.push(LabelMatcher { name, op, value });
        if p.eat(",") {
            continue;
        }
        if p.eat("}") {
            break;
        }
        p.skip_ws();
        return Err(p.err(
            p.pos,
            format!(
                "syntax error: unexpected {}, expecting , or }}",
                p.describe_here()
            ),
        ));
    }
    let empty_ok = matchers.iter().all(|m| match m.op {
        MatchOp::Equal => m.value.is_empty(),
        MatchOp::NotEqual => !m.value.is_empty(),
        MatchOp::Regex => {
            regex::Regex::new(&format!("^(?:{})$", m.value)).is_ok_and(|r| r.is_match(""))
        }
        MatchOp::NotRegex => {
            regex::Regex::new(&format!("^(?:{})$", m.value)).is_ok_and(|r| !r.is_match(""))
        }
    });
    if empty_ok {
        return Err(p.err(
            open_at,
            "queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will",
        ));
    }
    let mut filters = Vec::new();
    loop {
        p.skip_ws();
        if p.pos >= q.len() {
            break;
        }
        let at = p.pos;
        let kind = if p.eat("|=") {
            0
        } else if p.eat("!=") {
            1
        } else if p.eat("|~") {
            2
        } else if p.eat("!~") {
            3
        } else if p.eat("|") {
            if p.eat("drop") {
                // `| drop __error__` (Grafana adds it): no stage here produces errors, so a no-op.
                loop {
                    p.skip_ws();
                    let name_at = p.pos;
                    let name = p.ident()?;
                    if name != "__error__" && name != "__error_details__" {
                        return Err(p.err(name_at, format!("| drop {name} is not supported: only __error__ and __error_details__ can be dropped")));
                    }
                    if !p.eat(",") {
                        break;
                    }
                }
                continue;
            }
            let stage: String = p
                .rest()
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            return Err(p.err(
                at,
                format!("pipeline stage | {stage} is not supported: use line filters |= != |~ !~"),
            ));
        } else {
            return Err(p.err(at, format!("syntax error: unexpected {}, expecting a line filter (|= != |~ !~) or end of query", p.describe_here())));
        };
        p.skip_ws();
        let value_at = p.pos;
        let value = p.string()?;
        if kind >= 2 {
            check_regex(&p, value_at, &value)?;
        }
        filters.push(match kind {
            0 => LineFilter::Contains(value),
            1 => LineFilter::NotContains(value),
            2 => LineFilter::Regex(value),
            _ => LineFilter::NotRegex(value),
        });
    }
    Ok((matchers, filters))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, op: MatchOp, value: &str) -> LabelMatcher {
        LabelMatcher {
            name: name.into(),
            op,
            value: value.into(),
        }
    }

    #[test]
    fn parse_full_query_returns_matchers_and_filters() {
        let (ms, fs) = parse_logql(r#"{namespace="prod", pod=~"web-.*", container!="sidecar", app!~"x|y"} |= "GET" != `health` |~ "5\\d\\d" !~ "bot""#).unwrap();
        assert_eq!(
            ms,
            vec![
                m("namespace", MatchOp::Equal, "prod"),
                m("pod", MatchOp::Regex, "web-.*"),
                m("container", MatchOp::NotEqual, "sidecar"),
                m("app", MatchOp::NotRegex, "x|y"),
            ]
        );
        assert_eq!(
            fs,
            vec![
                LineFilter::Contains("GET".into()),
                LineFilter::NotContains("health".into()),
                LineFilter::Regex("5\\d\\d".into()),
                LineFilter::NotRegex("bot".into()),
            ]
        );
    }

    #[test]
    fn parse_escapes_and_trailing_comma_are_accepted() {
        let (ms, fs) = parse_logql("{ a = \"q\\\"x\\u00e9\" , }\n|= \"tab\\there\"").unwrap();
        assert_eq!(ms, vec![m("a", MatchOp::Equal, "q\"xé")]);
        assert_eq!(fs, vec![LineFilter::Contains("tab\there".into())]);
    }

    #[test]
    fn parse_missing_brace_reports_position() {
        let e = parse_logql(r#"namespace="a""#).unwrap_err();
        assert_eq!((e.position, e.line, e.column), (0, 1, 1));
        assert!(
            e.to_string()
                .starts_with("parse error at line 1, col 1: syntax error"),
            "{e}"
        );
    }

    #[test]
    fn parse_bad_operator_reports_its_position() {
        let e = parse_logql(r#"{app=="x"}"#).unwrap_err();
        assert_eq!(e.position, 5, "{e}");
        let e = parse_logql(r#"{app>"x"}"#).unwrap_err();
        assert_eq!(e.position, 4, "{e}");
        assert!(e.message.contains("expecting = or != or =~ or !~"), "{e}");
    }

    #[test]
    fn parse_unterminated_string_reports_its_start() {
        let e = parse_logql(r#"{app="x"} |= "abc"#).unwrap_err();
        assert_eq!(e.position, 13);
        assert!(e.message.contains("unterminated"));
    }

    #[test]
    fn parse_bad_regex_reports_the_string_position() {
        let e = parse_logql(r#"{app="x"} |~ "(a""#).unwrap_err();
        assert_eq!(e.position, 13);
        let e = parse_logql(r#"{app=~"[z"}"#).unwrap_err();
        assert_eq!(e.position, 6);
    }

    #[test]
    fn parse_empty_compatible_selector_is_rejected() {
        assert!(parse_logql("{}")
            .unwrap_err()
            .message
            .contains("empty-compatible"));
        assert!(parse_logql(r#"{app=~".*"}"#).is_err());
        assert!(parse_logql(r#"{app=~".+"}"#).is_ok());
    }

    #[test]
    fn parse_unsupported_stage_and_metric_query_say_so() {
        let e = parse_logql(r#"{app="x"} | json"#).unwrap_err();
        assert_eq!(e.position, 10);
        assert!(e.message.contains("json"));
        let e = parse_logql(r#"count_over_time({app="x"}[1m])"#).unwrap_err();
        assert!(e.message.contains("metric queries"), "{e}");
    }

    #[test]
    fn parse_drop_error_stage_is_a_no_op() {
        let (_, fs) =
            parse_logql(r#"{app="x"} |= "a" | drop __error__, __error_details__"#).unwrap();
        assert_eq!(fs, vec![LineFilter::Contains("a".into())]);
        assert!(parse_logql(r#"{app="x"} | drop level"#).is_err());
    }

    #[test]
    fn parse_error_on_second_line_counts_lines_and_columns() {
        let e = parse_logql("{app=\"x\"}\n  |= 5").unwrap_err();
        assert_eq!((e.line, e.column), (2, 6));
    }
}
