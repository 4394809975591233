//! The PromQL lexer: turns a query into tokens with their byte positions (for error messages).

use crate::parser::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Number(f64),
    /// A duration literal in milliseconds (`5m`, `1h30m`).
    Duration(i64),
    Str(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    At,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eql,
    Neq,
    Lte,
    Lss,
    Gte,
    Gtr,
    Assign,
    EqlRegex,
    NeqRegex,
    Eof,
}

impl Tok {
    /// How Prometheus names a token in "unexpected ..." messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier {s:?}"),
            Tok::Number(_) => "number".to_string(),
            Tok::Duration(_) => "duration".to_string(),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::LParen => "left parenthesis '('".to_string(),
            Tok::RParen => "right parenthesis ')'".to_string(),
            Tok::LBrace => "left brace '{'".to_string(),
            Tok::RBrace => "right brace '}'".to_string(),
            Tok::LBracket => "left bracket '['".to_string(),
            Tok::RBracket => "right bracket ']'".to_string(),
            Tok::Comma => "\",\"".to_string(),
            Tok::Colon => "\":\"".to_string(),
            Tok::At => "\"@\"".to_string(),
            Tok::Eof => "end of input".to_string(),
            other => format!("operator {:?}", other.op_text().unwrap_or("?")),
        }
    }

    pub(crate) fn op_text(&self) -> Option<&'static str> {
        Some(match self {
            Tok::Add => "+",
            Tok::Sub => "-",
            Tok::Mul => "*",
            Tok::Div => "/",
            Tok::Mod => "%",
            Tok::Pow => "^",
            Tok::Eql => "==",
            Tok::Neq => "!=",
            Tok::Lte => "<=",
            Tok::Lss => "<",
            Tok::Gte => ">=",
            Tok::Gtr => ">",
            Tok::Assign => "=",
            Tok::EqlRegex => "=~",
            Tok::NeqRegex => "!~",
            _ => return None,
        })
    }
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: usize,
}

pub(crate) fn lex(input: &str) -> Result<Vec<Token>, ParseError> {
    let b = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let two = if i + 1 < b.len() { b[i + 1] } else { 0 };
        let (tok, len) = match c {
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'{' => (Tok::LBrace, 1),
            b'}' => (Tok::RBrace, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b',' => (Tok::Comma, 1),
            b'@' => (Tok::At, 1),
            b'+' => (Tok::Add, 1),
            b'-' => (Tok::Sub, 1),
            b'*' => (Tok::Mul, 1),
            b'/' => (Tok::Div, 1),
            b'%' => (Tok::Mod, 1),
            b'^' => (Tok::Pow, 1),
            b'=' if two == b'=' => (Tok::Eql, 2),
            b'=' if two == b'~' => (Tok::EqlRegex, 2),
            b'=' => (Tok::Assign, 1),
            b'!' if two == b'=' => (Tok::Neq, 2),
            b'!' if two == b'~' => (Tok::NeqRegex, 2),
            b'!' => {
                return Err(ParseError::at(
                    input,
                    i,
                    "unexpected character after '!'".to_string(),
                ))
            }
            b'<' if two == b'=' => (Tok::Lte, 2),
            b'<' => (Tok::Lss, 1),
            b'>' if two == b'=' => (Tok::Gte, 2),
            b'>' => (Tok::Gtr, 1),
            b':' if !(two.is_ascii_alphabetic() || two == b'_' || two == b':') => (Tok::Colon, 1),
            b'"' | b'\'' | b'`' => {
                let (s, end) = lex_string(input, i)?;
                out.push(Token {
                    tok: Tok::Str(s),
                    pos: start,
                });
                i = end;
                continue;
            }
            c if c.is_ascii_digit() || (c == b'.' && two.is_ascii_digit()) => {
                let (tok, end) = lex_number(input, i)?;
                out.push(Token { tok, pos: start });
                i = end;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b':')
                {
                    j += 1;
                }
                let word = &input[i..j];
                let tok = match word.to_ascii_lowercase().as_str() {
                    "inf" => Tok::Number(f64::INFINITY),
                    "nan" => Tok::Number(f64::NAN),
                    _ => Tok::Ident(word.to_string()),
                };
                out.push(Token { tok, pos: start });
                i = j;
                continue;
            }
            _ => {
                let ch = input[i..].chars().next().unwrap_or('?');
                return Err(ParseError::at(
                    input,
                    i,
                    format!("unexpected character: {ch:?}"),
                ));
            }
        };
        out.push(Token { tok, pos: start });
        i += len;
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: input.len(),
    });
    Ok(out)
}

fn lex_number(input: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    let b = input.as_bytes();
    let mut i = start;
    if b[i] == b'0' && i + 1 < b.len() && (b[i + 1] == b'x' || b[i + 1] == b'X') {
        let mut j = i + 2;
        while j < b.len() && b[j].is_ascii_hexdigit() {
            j += 1;
        }
        let v = i64::from_str_radix(&input[i + 2..j], 16)
            .map_err(|_| ParseError::at(input, start, "bad number literal".to_string()))?;
        return Ok((Tok::Number(v as f64), j));
    }
    // A duration: digits followed by a unit, possibly repeated (`1h30m`).
    let mut j = i;
    while j < b.len() && b[j].is_ascii_digit() {
        j += 1;
    }
    if j > i && j < b.len() && unit_len(&b[j..]) > 0 {
        let mut ms: i64 = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            let mut k = i;
            while k < b.len() && b[k].is_ascii_digit() {
                k += 1;
            }
            let ulen = unit_len(&b[k..]);
            if ulen == 0 {
                return Err(ParseError::at(
                    input,
                    k,
                    format!("bad duration syntax: {:?}", &input[start..k]),
                ));
            }
            let n: i64 = input[i..k]
                .parse()
                .map_err(|_| ParseError::at(input, i, "bad duration number".to_string()))?;
            let unit = unit_ms(&input[k..k + ulen]);
            ms = n
                .checked_mul(unit)
                .and_then(|v| ms.checked_add(v))
                .ok_or_else(|| ParseError::at(input, start, "duration out of range".to_string()))?;
            i = k + ulen;
        }
        if i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            return Err(ParseError::at(
                input,
                start,
                format!("bad duration syntax: {:?}", word_at(input, start)),
            ));
        }
        return Ok((Tok::Duration(ms), i));
    }
    // A float: digits, fraction, exponent.
    let mut j = i;
    while j < b.len() && b[j].is_ascii_digit() {
        j += 1;
    }
    if j < b.len() && b[j] == b'.' {
        j += 1;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
    }
    if j < b.len() && (b[j] == b'e' || b[j] == b'E') {
        let mut k = j + 1;
        if k < b.len() && (b[k] == b'+' || b[k] == b'-') {
            k += 1;
        }
        if k < b.len() && b[k].is_ascii_digit() {
            while k < b.len() && b[k].is_ascii_digit() {
                k += 1;
            }
            j = k;
        }
    }
    if j < b.len() && (b[j].is_ascii_alphabetic() || b[j] == b'_') {
        return Err(ParseError::at(
            input,
            start,
            format!("bad number or duration syntax: {:?}", word_at(input, start)),
        ));
    }
    let v: f64 = input[i..j]
        .parse()
        .map_err(|_| ParseError::at(input, start, "bad number literal".to_string()))?;
    i = j;
    Ok((Tok::Number(v), i))
}

fn word_at(input: &str, start: usize) -> &str {
    let end = input[start..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .map_or(input.len(), |e| start + e);
    &input[start..end]
}

/// Length of the duration unit at the start of `b` (0 when none).
fn unit_len(b: &[u8]) -> usize {
    let next_is_word = |n: usize| b.len() > n && (b[n].is_ascii_alphabetic() || b[n] == b'_');
    if b.starts_with(b"ms") && !next_is_word(2) {
        return 2;
    }
    match b.first() {
        Some(b's' | b'm' | b'h' | b'd' | b'w' | b'y') if !next_is_word(1) => 1,
        _ => 0,
    }
}

fn unit_ms(unit: &str) -> i64 {
    match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => 365 * 86_400_000,
    }
}

/// Parses a Prometheus duration (`1h30m`, `5m`, `250ms`) into milliseconds.
pub(crate) fn parse_duration_ms(s: &str) -> Option<i64> {
    match lex(s).ok()?.as_slice() {
        [Token {
            tok: Tok::Duration(ms),
            ..
        }, Token { tok: Tok::Eof, .. }] => Some(*ms),
        _ => None,
    }
}

fn lex_string(input: &str, start: usize) -> Result<(String, usize), ParseError> {
    let quote = input.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = input[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        let pos = start + 1 + off;
        if c == quote {
            return Ok((out, pos + 1));
        }
        if quote == '`' {
            out.push(c);
            continue;
        }
        if c == '\n' {
            break;
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some((_, e)) = chars.next() else { break };
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'v' => out.push('\x0b'),
            '\\' => out.push('\\'),
            '"' | '\'' if e == quote => out.push(e),
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
                            return Err(ParseError::at(
                                input,
                                pos,
                                "invalid escape sequence in string".to_string(),
                            ))
                        }
                    }
                }
                let code = u32::from_str_radix(&hex, 16).unwrap_or(0xFFFD);
                out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
            }
            other => {
                return Err(ParseError::at(
                    input,
                    pos,
                    format!("unknown escape sequence '{other}'"),
                ))
            }
        }
    }
    Err(ParseError::at(
        input,
        start,
        "unterminated quoted string".to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lex_duration_compound_is_milliseconds() {
        assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("5x"), None);
    }

    #[test]
    fn lex_numbers_and_strings_are_decoded() {
        let toks: Vec<Tok> = lex("1.5e3 0x10 'a\\'b' `r\\n`")
            .unwrap()
            .into_iter()
            .map(|t| t.tok)
            .collect();
        assert_eq!(
            toks,
            vec![
                Tok::Number(1500.0),
                Tok::Number(16.0),
                Tok::Str("a'b".into()),
                Tok::Str("r\\n".into()),
                Tok::Eof
            ]
        );
    }
}
