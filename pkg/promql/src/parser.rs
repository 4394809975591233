//! The PromQL parser: a precedence-climbing parser over the lexer's tokens that checks types as
//! Prometheus does and reports errors with their position (`1:14: parse error: ...`).

use std::fmt;

use crate::ast::{AggOp, At, BinOp, Cardinality, Expr, ValueType, VectorMatching, VectorSelector};
use crate::functions;
use crate::lexer::{lex, Tok, Token};
use crate::{anchored_regex, MatchOp, Matcher};

/// A query that does not parse: the byte position of the error, its line and column (1-based, as
/// Prometheus prints them) and the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ParseError {
    pub position: usize,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: parse error: {}",
            self.line, self.column, self.message
        )
    }
}

impl ParseError {
    pub(crate) fn at(input: &str, position: usize, message: String) -> ParseError {
        let position = position.min(input.len());
        let before = &input[..position];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        ParseError {
            position,
            line,
            column: position - line_start + 1,
            message,
        }
    }
}

/// Parses a PromQL expression.
pub fn parse(query: &str) -> Result<Expr, ParseError> {
    let tokens = lex(query)?;
    let mut p = Parser {
        input: query,
        tokens,
        i: 0,
        depth: 0,
    };
    if p.peek() == &Tok::Eof {
        return Err(p.err_here("no expression found in input".to_string()));
    }
    let e = p.expr(0)?;
    if p.peek() != &Tok::Eof {
        let what = p.peek().describe();
        if p.peek() == &Tok::RParen {
            // Prometheus' lexer rejects an unmatched ')' once it has read it.
            return Err(ParseError::at(
                query,
                p.pos() + 1,
                format!("unexpected {what}"),
            ));
        }
        return Err(p.err_here(format!("unexpected {what}")));
    }
    Ok(e)
}

/// Parses a series selector as the `match[]` parameter takes it (`up{job="x"}` or `{job="x"}`).
pub fn parse_selector(query: &str) -> Result<Vec<Matcher>, ParseError> {
    match parse(query)? {
        Expr::Vector(vs) => Ok(vs.matchers),
        _ => Err(ParseError::at(
            query,
            0,
            "expected a series selector such as up{job=\"x\"}".to_string(),
        )),
    }
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token>,
    i: usize,
    /// Open parentheses consumed so far: reaching the end with some open is reported as Prometheus'
    /// lexer does ("unclosed left parenthesis" at the end of the input).
    depth: usize,
}

fn binop_of(tok: &Tok) -> Option<BinOp> {
    Some(match tok {
        Tok::Add => BinOp::Add,
        Tok::Sub => BinOp::Sub,
        Tok::Mul => BinOp::Mul,
        Tok::Div => BinOp::Div,
        Tok::Mod => BinOp::Mod,
        Tok::Pow => BinOp::Pow,
        Tok::Eql => BinOp::Eql,
        Tok::Neq => BinOp::Neq,
        Tok::Gtr => BinOp::Gtr,
        Tok::Lss => BinOp::Lss,
        Tok::Gte => BinOp::Gte,
        Tok::Lte => BinOp::Lte,
        Tok::Ident(s) => match s.to_ascii_lowercase().as_str() {
            "and" => BinOp::And,
            "or" => BinOp::Or,
            "unless" => BinOp::Unless,
            "atan2" => BinOp::Atan2,
            _ => return None,
        },
        _ => return None,
    })
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Tok {
        &self.tokens[self.i].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.tokens[(self.i + n).min(self.tokens.len() - 1)].tok
    }

    fn pos(&self) -> usize {
        self.tokens[self.i].pos
    }

    fn next(&mut self) -> Tok {
        let t = self.tokens[self.i].tok.clone();
        match t {
            Tok::LParen => self.depth += 1,
            Tok::RParen => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        if self.i < self.tokens.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn err_here(&self, message: String) -> ParseError {
        if *self.peek() == Tok::Eof && self.depth > 0 {
            return self.unclosed();
        }
        ParseError::at(self.input, self.pos(), message)
    }

    fn unclosed(&self) -> ParseError {
        ParseError::at(
            self.input,
            self.input.len(),
            "unclosed left parenthesis".to_string(),
        )
    }

    fn unexpected(&self, context: &str) -> ParseError {
        let what = self.peek().describe();
        self.err_here(
            format!("unexpected {what} {context}")
                .trim_end()
                .to_string(),
        )
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn expect(&mut self, tok: Tok, context: &str) -> Result<(), ParseError> {
        if *self.peek() == tok {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected(context))
        }
    }

    /// Binary expressions with operators of at least `min_prec`.
    fn expr(&mut self, min_prec: u8) -> Result<Expr, ParseError> {
        let start = self.pos();
        let mut lhs = self.unary()?;
        while let Some(op) = binop_of(self.peek()) {
            let prec = op.precedence();
            if prec < min_prec {
                break;
            }
            let op_pos = self.pos();
            self.next();
            let mut return_bool = false;
            if self.is_keyword("bool") {
                if !op.is_comparison() {
                    return Err(self.err_here(
                        "bool modifier can only be used on comparison operators".to_string(),
                    ));
                }
                self.next();
                return_bool = true;
            }
            let mut matching = None;
            if self.is_keyword("on") || self.is_keyword("ignoring") {
                let on = self.is_keyword("on");
                self.next();
                let labels = self.label_list()?;
                let mut m = VectorMatching {
                    card: if op.is_set() {
                        Cardinality::ManyToMany
                    } else {
                        Cardinality::OneToOne
                    },
                    on,
                    labels,
                    include: Vec::new(),
                };
                if self.is_keyword("group_left") || self.is_keyword("group_right") {
                    if op.is_set() {
                        return Err(self.err_here(format!(
                            "no grouping allowed for \"{}\" operation",
                            op.as_str()
                        )));
                    }
                    m.card = if self.is_keyword("group_left") {
                        Cardinality::ManyToOne
                    } else {
                        Cardinality::OneToMany
                    };
                    self.next();
                    if *self.peek() == Tok::LParen {
                        m.include = self.label_list()?;
                    }
                }
                matching = Some(m);
            } else if self.is_keyword("group_left") || self.is_keyword("group_right") {
                return Err(self.err_here(
                    "group_left/group_right need on(...) or ignoring(...) before them".to_string(),
                ));
            }
            // `^` is right-associative; all others are left-associative.
            let next_min = if op == BinOp::Pow { prec } else { prec + 1 };
            let rhs = self.expr(next_min)?;
            lhs = self.binary(op, lhs, rhs, return_bool, matching, (start, op_pos))?;
        }
        Ok(lhs)
    }

    fn binary(
        &self,
        op: BinOp,
        lhs: Expr,
        rhs: Expr,
        return_bool: bool,
        matching: Option<VectorMatching>,
        (start, op_pos): (usize, usize),
    ) -> Result<Expr, ParseError> {
        // Errors point where Prometheus' do: type errors at the start of the binary expression,
        // a comparison of scalars without bool at the operator.
        let (lt, rt) = (lhs.value_type(), rhs.value_type());
        for t in [lt, rt] {
            if t != ValueType::Scalar && t != ValueType::Vector {
                return Err(ParseError::at(
                    self.input,
                    start,
                    "binary expression must contain only scalar and instant vector types"
                        .to_string(),
                ));
            }
        }
        let both_vectors = lt == ValueType::Vector && rt == ValueType::Vector;
        if op.is_set() && !both_vectors {
            return Err(ParseError::at(
                self.input,
                start,
                format!(
                    "set operator \"{}\" not allowed in binary scalar expression",
                    op.as_str()
                ),
            ));
        }
        if op.is_comparison() && !return_bool && lt == ValueType::Scalar && rt == ValueType::Scalar
        {
            return Err(ParseError::at(
                self.input,
                op_pos,
                "comparisons between scalars must use BOOL modifier".to_string(),
            ));
        }
        if matching.is_some() && !both_vectors {
            return Err(ParseError::at(
                self.input,
                start,
                "vector matching only allowed between instant vectors".to_string(),
            ));
        }
        let matching = if both_vectors {
            let mut m = matching.unwrap_or(VectorMatching {
                card: Cardinality::OneToOne,
                on: false,
                labels: Vec::new(),
                include: Vec::new(),
            });
            if op.is_set() {
                m.card = Cardinality::ManyToMany;
            }
            if let Some(l) = m.include.iter().find(|l| m.on && m.labels.contains(l)) {
                return Err(ParseError::at(
                    self.input,
                    start,
                    format!("label \"{l}\" must not occur in ON and GROUP clause at once"),
                ));
            }
            Some(m)
        } else {
            None
        };
        Ok(Expr::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
            return_bool,
            matching,
        })
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        match self.peek() {
            Tok::Sub | Tok::Add => {
                let neg = *self.peek() == Tok::Sub;
                self.next();
                let pos = self.pos();
                // Unary operators bind like `*`: tighter than `+`, looser than `^`.
                let e = self.expr(BinOp::Pow.precedence())?;
                let t = e.value_type();
                if t != ValueType::Scalar && t != ValueType::Vector {
                    return Err(ParseError::at(
                        self.input,
                        pos,
                        format!(
                            "unary expression only allowed on expressions of type scalar or instant vector, got {:?}",
                            t.name()
                        ),
                    ));
                }
                Ok(match (neg, e) {
                    (false, Expr::Number(v)) => Expr::Number(v),
                    (false, e) => Expr::Plus(Box::new(e)),
                    (true, Expr::Number(v)) => Expr::Number(-v),
                    (true, e) => Expr::Neg(Box::new(e)),
                })
            }
            _ => self.postfix(),
        }
    }

    /// A primary expression followed by range/subquery brackets, `offset` and `@`.
    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let start = self.pos();
        let mut e = self.primary()?;
        loop {
            match self.peek() {
                Tok::LBracket => {
                    e = self.range_or_subquery(e, start)?;
                }
                Tok::Ident(s) if s.eq_ignore_ascii_case("offset") => {
                    let pos = self.pos();
                    self.next();
                    let neg = if *self.peek() == Tok::Sub {
                        self.next();
                        true
                    } else {
                        false
                    };
                    let d = self.duration("in offset")?;
                    let d = if neg { -d } else { d };
                    e = self.set_offset(e, d, pos)?;
                }
                Tok::At => {
                    let pos = self.pos();
                    self.next();
                    let at = self.at_value()?;
                    e = self.set_at(e, at, pos)?;
                }
                _ => return Ok(e),
            }
        }
    }

    fn at_value(&mut self) -> Result<At, ParseError> {
        match self.next() {
            Tok::Number(v) if v.is_finite() => Ok(At::Time((v * 1000.0).round() as i64)),
            Tok::Sub => match self.next() {
                Tok::Number(v) if v.is_finite() => Ok(At::Time((-v * 1000.0).round() as i64)),
                _ => Err(self.err_here("unexpected token after @ -".to_string())),
            },
            Tok::Ident(s) if s == "start" || s == "end" => {
                self.expect(Tok::LParen, "in @ modifier")?;
                self.expect(Tok::RParen, "in @ modifier")?;
                Ok(if s == "start" { At::Start } else { At::End })
            }
            _ => {
                self.i -= 1;
                Err(self.err_here(
                    "unexpected token after @: expected a timestamp, start() or end()".to_string(),
                ))
            }
        }
    }

    fn set_offset(&self, e: Expr, d: i64, pos: usize) -> Result<Expr, ParseError> {
        let twice = || {
            ParseError::at(
                self.input,
                pos,
                "offset may not be set multiple times".into(),
            )
        };
        match e {
            Expr::Vector(mut vs) => {
                if vs.offset_ms != 0 {
                    return Err(twice());
                }
                vs.offset_ms = d;
                Ok(Expr::Vector(vs))
            }
            Expr::Matrix(mut vs, r) => {
                if vs.offset_ms != 0 {
                    return Err(twice());
                }
                vs.offset_ms = d;
                Ok(Expr::Matrix(vs, r))
            }
            Expr::Subquery {
                expr,
                range_ms,
                step_ms,
                offset_ms,
                at,
            } => {
                if offset_ms != 0 {
                    return Err(twice());
                }
                Ok(Expr::Subquery {
                    expr,
                    range_ms,
                    step_ms,
                    offset_ms: d,
                    at,
                })
            }
            _ => Err(ParseError::at(
                self.input,
                pos,
                "offset modifier must be preceded by an instant vector selector or range vector selector or a subquery".to_string(),
            )),
        }
    }

    fn set_at(&self, e: Expr, at: At, pos: usize) -> Result<Expr, ParseError> {
        let twice = || {
            ParseError::at(
                self.input,
                pos,
                "@ <timestamp> may not be set multiple times".into(),
            )
        };
        match e {
            Expr::Vector(mut vs) => {
                if vs.at.is_some() {
                    return Err(twice());
                }
                vs.at = Some(at);
                Ok(Expr::Vector(vs))
            }
            Expr::Matrix(mut vs, r) => {
                if vs.at.is_some() {
                    return Err(twice());
                }
                vs.at = Some(at);
                Ok(Expr::Matrix(vs, r))
            }
            Expr::Subquery {
                expr,
                range_ms,
                step_ms,
                offset_ms,
                at: old,
            } => {
                if old.is_some() {
                    return Err(twice());
                }
                Ok(Expr::Subquery {
                    expr,
                    range_ms,
                    step_ms,
                    offset_ms,
                    at: Some(at),
                })
            }
            _ => Err(ParseError::at(
                self.input,
                pos,
                "@ modifier must be preceded by an instant vector selector or range vector selector or a subquery".to_string(),
            )),
        }
    }

    /// A duration: a duration literal, or a number of seconds.
    fn duration(&mut self, context: &str) -> Result<i64, ParseError> {
        match self.peek().clone() {
            Tok::Duration(ms) => {
                self.next();
                Ok(ms)
            }
            Tok::Number(v) if v.is_finite() && v >= 0.0 => {
                self.next();
                Ok((v * 1000.0).round() as i64)
            }
            _ => Err(self.unexpected(&format!("{context}, expected duration"))),
        }
    }

    fn range_or_subquery(&mut self, e: Expr, start: usize) -> Result<Expr, ParseError> {
        let bracket = self.pos();
        self.next();
        let range = self.duration("in range")?;
        if range <= 0 {
            return Err(ParseError::at(
                self.input,
                bracket,
                "range must be greater than 0".to_string(),
            ));
        }
        if *self.peek() == Tok::Colon {
            self.next();
            let step = if *self.peek() == Tok::RBracket {
                None
            } else {
                Some(self.duration("in subquery")?)
            };
            self.expect(Tok::RBracket, "in subquery")?;
            if e.value_type() != ValueType::Vector {
                return Err(ParseError::at(
                    self.input,
                    start,
                    format!(
                        "subquery is only allowed on instant vector, got {} instead",
                        e.value_type().name()
                    ),
                ));
            }
            if step == Some(0) {
                return Err(ParseError::at(
                    self.input,
                    bracket,
                    "subquery step must be greater than 0".to_string(),
                ));
            }
            return Ok(Expr::Subquery {
                expr: Box::new(e),
                range_ms: range,
                step_ms: step,
                offset_ms: 0,
                at: None,
            });
        }
        self.expect(Tok::RBracket, "in range")?;
        match e {
            Expr::Vector(vs) if vs.offset_ms == 0 && vs.at.is_none() => Ok(Expr::Matrix(vs, range)),
            Expr::Vector(_) => Err(ParseError::at(
                self.input,
                bracket,
                "no offset or @ modifiers allowed before range".to_string(),
            )),
            _ => Err(ParseError::at(
                self.input,
                start,
                "ranges only allowed for vector selectors".to_string(),
            )),
        }
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Number(v) => {
                self.next();
                Ok(Expr::Number(v))
            }
            Tok::Duration(ms) => {
                self.next();
                Ok(Expr::Number(ms as f64 / 1000.0))
            }
            Tok::Str(s) => {
                self.next();
                Ok(Expr::String(s))
            }
            Tok::LParen => {
                self.next();
                if *self.peek() == Tok::RParen {
                    return Err(self.unexpected("in parenthesized expression"));
                }
                let e = self.expr(0)?;
                if *self.peek() != Tok::RParen {
                    if *self.peek() == Tok::Eof {
                        return Err(self.unclosed());
                    }
                    return Err(self.unexpected("in parenthesized expression"));
                }
                self.next();
                Ok(Expr::Paren(Box::new(e)))
            }
            Tok::LBrace => {
                let matchers = self.matchers()?;
                self.selector(None, matchers, pos)
            }
            Tok::Ident(name) => {
                let next = self.peek_at(1).clone();
                if let Some(op) = AggOp::from_name(&name) {
                    let grouping_kw = matches!(&next, Tok::Ident(s) if s.eq_ignore_ascii_case("by") || s.eq_ignore_ascii_case("without"));
                    if next == Tok::LParen || grouping_kw {
                        return self.aggregate(op);
                    }
                }
                if next == Tok::LParen {
                    return self.call(name, pos);
                }
                self.next();
                let mut matchers = vec![Matcher::new("__name__", MatchOp::Equal, &name)];
                if *self.peek() == Tok::LBrace {
                    let brace = self.pos();
                    let more = self.matchers()?;
                    if more.iter().any(|m| m.name == "__name__") {
                        return Err(ParseError::at(
                            self.input,
                            brace,
                            "metric name must not be set twice".to_string(),
                        ));
                    }
                    matchers.extend(more);
                }
                self.selector(Some(name), matchers, pos)
            }
            Tok::Eof => Err(self.err_here("unexpected end of input".to_string())),
            _ => Err(self.unexpected("")).map_err(|mut e| {
                e.message = e.message.trim_end().to_string();
                e
            }),
        }
    }

    fn selector(
        &self,
        name: Option<String>,
        matchers: Vec<Matcher>,
        pos: usize,
    ) -> Result<Expr, ParseError> {
        if matchers.iter().all(|m| m.matches("")) {
            return Err(ParseError::at(
                self.input,
                pos,
                "vector selector must contain at least one non-empty matcher".to_string(),
            ));
        }
        Ok(Expr::Vector(VectorSelector {
            name,
            matchers,
            offset_ms: 0,
            at: None,
        }))
    }

    /// `{a="b", c=~"d"}`
    fn matchers(&mut self) -> Result<Vec<Matcher>, ParseError> {
        self.expect(Tok::LBrace, "")?;
        let mut out = Vec::new();
        loop {
            if *self.peek() == Tok::RBrace {
                self.next();
                return Ok(out);
            }
            let matcher_pos = self.pos();
            let name = match self.peek().clone() {
                Tok::Ident(s) => s,
                Tok::Str(s) => s,
                Tok::Eof => {
                    return Err(self.err_here("unexpected end of input inside braces".to_string()))
                }
                _ => return Err(self.unexpected("in label matching, expected label name")),
            };
            self.next();
            let op = match self.peek() {
                Tok::Assign => MatchOp::Equal,
                Tok::Neq => MatchOp::NotEqual,
                Tok::EqlRegex => MatchOp::Regex,
                Tok::NeqRegex => MatchOp::NotRegex,
                _ => {
                    return Err(self.unexpected(
                        "in label matching, expected one of \"=\", \"!=\", \"=~\" or \"!~\"",
                    ))
                }
            };
            self.next();
            let value = match self.peek().clone() {
                Tok::Str(s) => s,
                _ => return Err(self.unexpected("in label matching, expected string")),
            };
            self.next();
            if matches!(op, MatchOp::Regex | MatchOp::NotRegex) {
                if let Err(e) = anchored_regex(&value) {
                    return Err(ParseError::at(
                        self.input,
                        matcher_pos,
                        format!("error parsing regexp: {}", first_line(&e.to_string())),
                    ));
                }
            }
            out.push(Matcher { name, op, value });
            match self.peek() {
                Tok::Comma => {
                    self.next();
                }
                Tok::RBrace => {}
                Tok::Eof => {
                    return Err(self.err_here("unexpected end of input inside braces".to_string()))
                }
                _ => return Err(self.unexpected("in label matching, expected \",\" or \"}\"")),
            }
        }
    }

    /// `(a, b, c)` for by/without/on/ignoring/group_left.
    fn label_list(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect(Tok::LParen, "in grouping opts, expected \"(\"")?;
        let mut out = Vec::new();
        loop {
            match self.peek().clone() {
                Tok::RParen => {
                    self.next();
                    return Ok(out);
                }
                Tok::Ident(s) | Tok::Str(s) => {
                    self.next();
                    out.push(s);
                    match self.peek() {
                        Tok::Comma => {
                            self.next();
                        }
                        Tok::RParen => {}
                        _ => {
                            return Err(self.unexpected("in grouping opts, expected \",\" or \")\""))
                        }
                    }
                }
                _ => return Err(self.unexpected("in grouping opts, expected label")),
            }
        }
    }

    fn grouping(&mut self) -> Result<Option<(bool, Vec<String>)>, ParseError> {
        if self.is_keyword("by") || self.is_keyword("without") {
            let without = self.is_keyword("without");
            self.next();
            return Ok(Some((without, self.label_list()?)));
        }
        Ok(None)
    }

    fn aggregate(&mut self, op: AggOp) -> Result<Expr, ParseError> {
        let start = self.pos();
        self.next();
        let mut grouping = self.grouping()?;
        let lparen = self.pos();
        self.expect(Tok::LParen, "in aggregation")?;
        let mut args = Vec::new();
        let mut positions = Vec::new();
        loop {
            if *self.peek() == Tok::RParen {
                break;
            }
            positions.push(self.pos());
            args.push(self.expr(0)?);
            match self.peek() {
                Tok::Comma => {
                    self.next();
                }
                Tok::RParen => {}
                Tok::Eof => return Err(self.unclosed()),
                _ => return Err(self.unexpected("in aggregation")),
            }
        }
        self.next();
        if grouping.is_none() {
            grouping = self.grouping()?;
        }
        let want = if op.param_type().is_some() { 2 } else { 1 };
        if args.len() != want {
            return Err(ParseError::at(
                self.input,
                start,
                format!(
                    "wrong number of arguments for aggregate expression provided, expected {want}, got {}",
                    args.len()
                ),
            ));
        }
        let expr = args.pop().unwrap_or(Expr::Number(0.0));
        let expr_pos = positions.pop().unwrap_or(lparen);
        if expr.value_type() != ValueType::Vector {
            return Err(ParseError::at(
                self.input,
                expr_pos,
                format!(
                    "expected type instant vector in aggregation expression, got {}",
                    expr.value_type().name()
                ),
            ));
        }
        let param = args.pop();
        if let (Some(p), Some(want)) = (&param, op.param_type()) {
            if p.value_type() != want {
                return Err(ParseError::at(
                    self.input,
                    positions[0],
                    format!(
                        "expected type {} in aggregation parameter, got {}",
                        want.name(),
                        p.value_type().name()
                    ),
                ));
            }
        }
        let (without, grouping) = grouping.unwrap_or((false, Vec::new()));
        Ok(Expr::Aggregate {
            op,
            param: param.map(Box::new),
            expr: Box::new(expr),
            without,
            grouping,
        })
    }

    fn call(&mut self, name: String, pos: usize) -> Result<Expr, ParseError> {
        let Some(sig) = functions::signature(&name) else {
            return Err(ParseError::at(
                self.input,
                pos,
                format!("unknown function with name {name:?}"),
            ));
        };
        self.next();
        self.expect(Tok::LParen, "in function call")?;
        let mut args = Vec::new();
        let mut positions = Vec::new();
        loop {
            if *self.peek() == Tok::RParen {
                break;
            }
            positions.push(self.pos());
            args.push(self.expr(0)?);
            match self.peek() {
                Tok::Comma => {
                    self.next();
                }
                Tok::RParen => {}
                Tok::Eof => return Err(self.unclosed()),
                _ => return Err(self.unexpected("in function call")),
            }
        }
        self.next();
        // As Prometheus: a variadic function may leave out its last argument type (`round(v)`)
        // and repeat it up to `variadic` times (any number when negative).
        let n = sig.args.len();
        let problem = if sig.variadic == 0 {
            (args.len() != n).then(|| format!("{n}"))
        } else if args.len() < n - 1 {
            Some(format!("at least {}", n - 1))
        } else if sig.variadic > 0 && args.len() > n - 1 + sig.variadic as usize {
            Some(format!("at most {}", n - 1 + sig.variadic as usize))
        } else {
            None
        };
        if let Some(expected) = problem {
            return Err(ParseError::at(
                self.input,
                pos,
                format!(
                    "expected {expected} argument(s) in call to {name:?}, got {}",
                    args.len()
                ),
            ));
        }
        for (k, a) in args.iter().enumerate() {
            let want = sig.arg_type(k);
            if a.value_type() != want {
                return Err(ParseError::at(
                    self.input,
                    positions[k],
                    format!(
                        "expected type {} in call to function {name:?}, got {}",
                        want.name(),
                        a.value_type().name()
                    ),
                ));
            }
        }
        Ok(Expr::Call { func: name, args })
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(q: &str) -> ParseError {
        parse(q).expect_err(q)
    }

    #[test]
    fn parse_round_trips_through_display() {
        for q in [
            "rate(container_cpu_usage_seconds_total{namespace=\"a\",pod=~\"web-.*\"}[5m])",
            "+x",
            "sum by (namespace) (rate(x[1m] offset 5m))",
            "topk(3, sum without (cpu) (y))",
            "a + on (node) group_left (pod) b",
            "a > bool 1",
            "-x ^ 2",
            "max_over_time(rate(x[5m])[1h:1m])",
            "x @ 100.000",
            "label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")",
            "a / ignoring (mode) b",
        ] {
            let e = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert_eq!(e.to_string(), q);
        }
    }

    #[test]
    fn format_numbers_as_go_shortest_g() {
        let e = parse("1e6 + 123456 + 1234567 + 0.0001 + 0.00001 + 1.5e-7 + Inf + NaN").unwrap();
        assert_eq!(
            e.to_string(),
            "1e+06 + 123456 + 1.234567e+06 + 0.0001 + 1e-05 + 1.5e-07 + +Inf + NaN"
        );
    }

    #[test]
    fn parse_precedence_follows_prometheus() {
        assert_eq!(parse("1 + 2 * 3").unwrap().to_string(), "1 + 2 * 3");
        match parse("1 + 2 * 3").unwrap() {
            Expr::Binary { op: BinOp::Add, .. } => {}
            e => panic!("{e:?}"),
        }
        match parse("2 ^ 3 ^ 2").unwrap() {
            Expr::Binary {
                op: BinOp::Pow,
                rhs,
                ..
            } => {
                assert!(matches!(*rhs, Expr::Binary { op: BinOp::Pow, .. }))
            }
            e => panic!("{e:?}"),
        }
        match parse("a or b and c").unwrap() {
            Expr::Binary { op: BinOp::Or, .. } => {}
            e => panic!("{e:?}"),
        }
        // Unary minus binds looser than ^.
        assert!(matches!(parse("-a ^ 2").unwrap(), Expr::Neg(_)));
        assert_eq!(parse("-1").unwrap(), Expr::Number(-1.0));
    }

    #[test]
    fn parse_aggregation_grouping_after_body_is_accepted() {
        let a = parse("sum(x) by (a, b)").unwrap();
        let b = parse("sum by (a, b) (x)").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn parse_errors_carry_positions() {
        let e = err("sum(rate(x[5m])");
        assert_eq!((e.line, e.column), (1, 16));
        assert_eq!(
            e.to_string(),
            "1:16: parse error: unclosed left parenthesis"
        );

        let e = err("rate(x)");
        assert_eq!(e.position, 5);
        assert_eq!(
            e.message,
            "expected type range vector in call to function \"rate\", got instant vector"
        );

        let e = err("foo{a=\"b\" c}");
        assert_eq!(e.position, 10);

        let e = err("x{a=~\"(\"}");
        assert_eq!(e.position, 2);
        assert!(e.message.starts_with("error parsing regexp"), "{e}");

        let e = err("nosuch(x)");
        assert_eq!(
            e.to_string(),
            "1:1: parse error: unknown function with name \"nosuch\""
        );

        let e = err("1 > 2");
        assert_eq!(e.position, 2);
        let e = err("g and 1");
        assert_eq!(e.position, 0);

        let e = err("up\n  + )");
        assert_eq!((e.line, e.column), (2, 5));

        let e = err("{a=\"\"}");
        assert_eq!(
            e.message,
            "vector selector must contain at least one non-empty matcher"
        );

        let e = err("");
        assert_eq!(e.message, "no expression found in input");

        let e = err("x[5m][1m]");
        assert_eq!(e.position, 0);

        assert!(parse("round(x)").is_ok());
        assert!(parse("label_join(x, \"a\", \",\")").is_ok());
        let e = err("round(x, 1, 2)");
        assert_eq!(
            e.message,
            "expected at most 2 argument(s) in call to \"round\", got 3"
        );
        let e = err("clamp(x, 1)");
        assert_eq!(
            e.message,
            "expected 3 argument(s) in call to \"clamp\", got 2"
        );

        let e = err("x $");
        assert_eq!(e.to_string(), "1:3: parse error: unexpected character: '$'");
    }

    #[test]
    fn parse_selector_duration_and_offset_are_milliseconds() {
        match parse("x[1h30m] offset 1m").unwrap() {
            Expr::Matrix(vs, r) => {
                assert_eq!(r, 5_400_000);
                assert_eq!(vs.offset_ms, 60_000);
                assert_eq!(vs.name.as_deref(), Some("x"));
            }
            e => panic!("{e:?}"),
        }
    }
}
