//! The PromQL syntax tree and its canonical text form (what `format_query` returns).

use std::fmt;

use crate::{MatchOp, Matcher};

/// The type of a PromQL expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Scalar,
    Vector,
    Matrix,
    String,
}

impl ValueType {
    /// The name Prometheus uses in messages (`instant vector`, `range vector`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Scalar => "scalar",
            ValueType::Vector => "instant vector",
            ValueType::Matrix => "range vector",
            ValueType::String => "string",
        }
    }

    /// The name in API results (`resultType`).
    pub fn result_type(self) -> &'static str {
        match self {
            ValueType::Scalar => "scalar",
            ValueType::Vector => "vector",
            ValueType::Matrix => "matrix",
            ValueType::String => "string",
        }
    }
}

/// The `@` modifier of a selector or subquery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum At {
    /// `@ <unix seconds>`, kept in milliseconds.
    Time(i64),
    Start,
    End,
}

/// A vector selector `name{matchers} offset d @ t`.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSelector {
    pub name: Option<String>,
    /// All matchers, including the `__name__` matcher made from `name`.
    pub matchers: Vec<Matcher>,
    pub offset_ms: i64,
    pub at: Option<At>,
}

/// Binary operators, by precedence groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eql,
    Neq,
    Gtr,
    Lss,
    Gte,
    Lte,
    And,
    Or,
    Unless,
}

impl BinOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
            BinOp::Atan2 => "atan2",
            BinOp::Eql => "==",
            BinOp::Neq => "!=",
            BinOp::Gtr => ">",
            BinOp::Lss => "<",
            BinOp::Gte => ">=",
            BinOp::Lte => "<=",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Unless => "unless",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eql | BinOp::Neq | BinOp::Gtr | BinOp::Lss | BinOp::Gte | BinOp::Lte
        )
    }

    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }

    /// Higher binds tighter.
    pub(crate) fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And | BinOp::Unless => 2,
            BinOp::Eql | BinOp::Neq | BinOp::Gtr | BinOp::Lss | BinOp::Gte | BinOp::Lte => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Mod | BinOp::Atan2 => 5,
            BinOp::Pow => 6,
        }
    }
}

/// Which side of a vector match may have many series per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

/// `on`/`ignoring` and `group_left`/`group_right` of a binary operation between vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorMatching {
    pub card: Cardinality,
    /// `on(...)` when true, `ignoring(...)` when false.
    pub on: bool,
    pub labels: Vec<String>,
    /// Labels copied from the "one" side (`group_left(<include>)`).
    pub include: Vec<String>,
}

/// Aggregation operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Quantile,
    CountValues,
}

impl AggOp {
    pub fn from_name(s: &str) -> Option<AggOp> {
        Some(match s.to_ascii_lowercase().as_str() {
            "sum" => AggOp::Sum,
            "avg" => AggOp::Avg,
            "min" => AggOp::Min,
            "max" => AggOp::Max,
            "count" => AggOp::Count,
            "group" => AggOp::Group,
            "stddev" => AggOp::Stddev,
            "stdvar" => AggOp::Stdvar,
            "topk" => AggOp::Topk,
            "bottomk" => AggOp::Bottomk,
            "quantile" => AggOp::Quantile,
            "count_values" => AggOp::CountValues,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AggOp::Sum => "sum",
            AggOp::Avg => "avg",
            AggOp::Min => "min",
            AggOp::Max => "max",
            AggOp::Count => "count",
            AggOp::Group => "group",
            AggOp::Stddev => "stddev",
            AggOp::Stdvar => "stdvar",
            AggOp::Topk => "topk",
            AggOp::Bottomk => "bottomk",
            AggOp::Quantile => "quantile",
            AggOp::CountValues => "count_values",
        }
    }

    /// The type of the parameter, for the operators that take one.
    pub fn param_type(self) -> Option<ValueType> {
        match self {
            AggOp::Topk | AggOp::Bottomk | AggOp::Quantile => Some(ValueType::Scalar),
            AggOp::CountValues => Some(ValueType::String),
            _ => None,
        }
    }
}

/// A parsed PromQL expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    String(String),
    Vector(VectorSelector),
    /// A range vector selector: the selector and the range in milliseconds.
    Matrix(VectorSelector, i64),
    Subquery {
        expr: Box<Expr>,
        range_ms: i64,
        step_ms: Option<i64>,
        offset_ms: i64,
        at: Option<At>,
    },
    Paren(Box<Expr>),
    /// Unary minus (on a number literal the parser folds it into the number).
    Neg(Box<Expr>),
    /// Unary plus: the value unchanged (kept so the query prints as written, as Prometheus does).
    Plus(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
        return_bool: bool,
        matching: Option<VectorMatching>,
    },
    Call {
        func: String,
        args: Vec<Expr>,
    },
    Aggregate {
        op: AggOp,
        param: Option<Box<Expr>>,
        expr: Box<Expr>,
        /// `without(...)` when true, `by(...)` when false.
        without: bool,
        grouping: Vec<String>,
    },
}

impl Expr {
    /// The type this expression evaluates to.
    pub fn value_type(&self) -> ValueType {
        match self {
            Expr::Number(_) => ValueType::Scalar,
            Expr::String(_) => ValueType::String,
            Expr::Vector(_) | Expr::Aggregate { .. } => ValueType::Vector,
            Expr::Matrix(..) | Expr::Subquery { .. } => ValueType::Matrix,
            Expr::Paren(e) | Expr::Neg(e) | Expr::Plus(e) => e.value_type(),
            Expr::Binary { lhs, rhs, .. } => {
                if lhs.value_type() == ValueType::Scalar && rhs.value_type() == ValueType::Scalar {
                    ValueType::Scalar
                } else {
                    ValueType::Vector
                }
            }
            Expr::Call { func, .. } => crate::functions::signature(func)
                .map(|s| s.ret)
                .unwrap_or(ValueType::Vector),
        }
    }
}

/// Formats a number literal as Prometheus prints it in query text (Go's `fmt.Sprint` of a float:
/// shortest digits, exponent form below 1e-4 or from 1e6 on, as `strconv.FormatFloat(v, 'g', -1, 64)`, `+Inf`, `-Inf`, `NaN`).
pub(crate) fn format_number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{v}")
    }
}

/// Formats milliseconds as a Prometheus duration (`1h30m`, `5m`, `0s`).
pub fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = ms;
    if rest < 0 {
        out.push('-');
        rest = -rest;
    }
    for (unit, size) in [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// Quotes a string as Go's `strconv.Quote` does for printable text.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn fmt_modifiers(f: &mut fmt::Formatter<'_>, offset_ms: i64, at: Option<At>) -> fmt::Result {
    if let Some(at) = at {
        match at {
            At::Time(ms) => write!(f, " @ {}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))?,
            At::Start => write!(f, " @ start()")?,
            At::End => write!(f, " @ end()")?,
        }
    }
    if offset_ms > 0 {
        write!(f, " offset {}", format_duration(offset_ms))?;
    } else if offset_ms < 0 {
        write!(f, " offset -{}", format_duration(-offset_ms))?;
    }
    Ok(())
}

impl fmt::Display for VectorSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_selector(f)?;
        fmt_modifiers(f, self.offset_ms, self.at)
    }
}

impl VectorSelector {
    /// As Prometheus: the matcher texts sorted and joined by `,`, the name's own matcher left out.
    fn fmt_selector(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown: Vec<String> = self
            .matchers
            .iter()
            .filter(|m| {
                !(m.name == "__name__"
                    && m.op == MatchOp::Equal
                    && self.name.as_deref() == Some(m.value.as_str())
                    && !m.value.is_empty())
            })
            .map(|m| {
                let op = match m.op {
                    MatchOp::Equal => "=",
                    MatchOp::NotEqual => "!=",
                    MatchOp::Regex => "=~",
                    MatchOp::NotRegex => "!~",
                };
                format!("{}{}{}", m.name, op, quote(&m.value))
            })
            .collect();
        shown.sort();
        if let Some(name) = &self.name {
            write!(f, "{name}")?;
        }
        if !shown.is_empty() {
            write!(f, "{{{}}}", shown.join(","))?;
        }
        Ok(())
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Number(v) => write!(f, "{}", format_number(*v)),
            Expr::String(s) => write!(f, "{}", quote(s)),
            Expr::Vector(vs) => write!(f, "{vs}"),
            Expr::Matrix(vs, range) => {
                vs.fmt_selector(f)?;
                write!(f, "[{}]", format_duration(*range))?;
                fmt_modifiers(f, vs.offset_ms, vs.at)
            }
            Expr::Subquery {
                expr,
                range_ms,
                step_ms,
                offset_ms,
                at,
            } => {
                let step = step_ms.map(format_duration).unwrap_or_default();
                write!(f, "{expr}[{}:{step}]", format_duration(*range_ms))?;
                fmt_modifiers(f, *offset_ms, *at)
            }
            Expr::Paren(e) => write!(f, "({e})"),
            Expr::Neg(e) => write!(f, "-{e}"),
            Expr::Plus(e) => write!(f, "+{e}"),
            Expr::Binary {
                op,
                lhs,
                rhs,
                return_bool,
                matching,
            } => {
                write!(f, "{lhs} {}", op.as_str())?;
                if *return_bool {
                    write!(f, " bool")?;
                }
                if let Some(m) = matching {
                    if !m.labels.is_empty() || m.on {
                        let tag = if m.on { "on" } else { "ignoring" };
                        write!(f, " {tag} ({})", m.labels.join(", "))?;
                        match m.card {
                            Cardinality::ManyToOne => {
                                write!(f, " group_left ({})", m.include.join(", "))?
                            }
                            Cardinality::OneToMany => {
                                write!(f, " group_right ({})", m.include.join(", "))?
                            }
                            _ => {}
                        }
                    }
                }
                write!(f, " {rhs}")
            }
            Expr::Call { func, args } => {
                let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                write!(f, "{func}({})", args.join(", "))
            }
            Expr::Aggregate {
                op,
                param,
                expr,
                without,
                grouping,
            } => {
                write!(f, "{}", op.as_str())?;
                if *without || !grouping.is_empty() {
                    let kw = if *without { "without" } else { "by" };
                    write!(f, " {kw} ({}) ", grouping.join(", "))?;
                }
                match param {
                    Some(p) => write!(f, "({p}, {expr})"),
                    None => write!(f, "({expr})"),
                }
            }
        }
    }
}
