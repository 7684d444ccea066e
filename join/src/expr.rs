//! Arithmetic over a joined pair's `left` and `right` values, such as
//! `2*pi/60*left*right`, parsed and checked once when a rule is loaded.
//!
//! Written here rather than taken from a crate because the language is
//! tiny and fixed (two variables, a few constants and functions), and a bad
//! expression must be reported at its exact column.
//!
//! Grammar: `+ - * / %` with the usual precedence, `^` (right-associative,
//! binding tighter than unary minus: `-2^2 = -4`), parentheses, numbers
//! (`1`, `2.5`, `1e-3`), the variables `left` and `right`, the constants
//! `pi`, `tau` and `e`, and the functions `abs sqrt exp ln log10 sin cos
//! tan asin acos atan floor ceil round sign` (one argument), `atan2 pow
//! hypot` (two) and `min max` (two or more).

use std::fmt;

/// A parsed expression.
#[derive(Clone, Debug)]
pub struct Expr {
    root: Node,
    source: String,
}

#[derive(Clone, Debug)]
enum Node {
    Num(f64),
    Left,
    Right,
    Neg(Box<Node>),
    Bin(Op, Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
}

#[derive(Clone, Copy, Debug)]
enum Func {
    Unary(fn(f64) -> f64),
    Binary(fn(f64, f64) -> f64),
    Min,
    Max,
}

/// Where and why an expression cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError {
    pub source: String,
    /// Byte offset of the bad spot.
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = self.source[..self.offset.min(self.source.len())].chars().count();
        write!(f, "{} at column {}\n  {}\n  {}^", self.message, column + 1, self.source, " ".repeat(column))
    }
}

impl std::error::Error for ExprError {}

impl Expr {
    pub fn parse(source: &str) -> Result<Self, ExprError> {
        let mut p = Parser { src: source, pos: 0 };
        let root = p.sum()?;
        p.skip_ws();
        if p.pos < source.len() {
            return Err(p.error(format!("unexpected {:?}", p.rest().chars().next().unwrap_or(' '))));
        }
        Ok(Self { root, source: source.to_string() })
    }

    pub fn eval(&self, left: f64, right: f64) -> f64 {
        eval(&self.root, left, right)
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

fn eval(node: &Node, l: f64, r: f64) -> f64 {
    match node {
        Node::Num(v) => *v,
        Node::Left => l,
        Node::Right => r,
        Node::Neg(a) => -eval(a, l, r),
        Node::Bin(op, a, b) => {
            let (a, b) = (eval(a, l, r), eval(b, l, r));
            match op {
                Op::Add => a + b,
                Op::Sub => a - b,
                Op::Mul => a * b,
                Op::Div => a / b,
                Op::Rem => a % b,
                Op::Pow => a.powf(b),
            }
        }
        Node::Call(f, args) => match f {
            Func::Unary(f) => f(eval(&args[0], l, r)),
            Func::Binary(f) => f(eval(&args[0], l, r), eval(&args[1], l, r)),
            Func::Min => args.iter().map(|a| eval(a, l, r)).fold(f64::INFINITY, f64::min),
            Func::Max => args.iter().map(|a| eval(a, l, r)).fold(f64::NEG_INFINITY, f64::max),
        },
    }
}

fn function(name: &str) -> Option<(Func, usize, usize)> {
    let unary = |f: fn(f64) -> f64| Some((Func::Unary(f), 1, 1));
    let binary = |f: fn(f64, f64) -> f64| Some((Func::Binary(f), 2, 2));
    match name {
        "abs" => unary(f64::abs),
        "sqrt" => unary(f64::sqrt),
        "exp" => unary(f64::exp),
        "ln" => unary(f64::ln),
        "log10" => unary(f64::log10),
        "sin" => unary(f64::sin),
        "cos" => unary(f64::cos),
        "tan" => unary(f64::tan),
        "asin" => unary(f64::asin),
        "acos" => unary(f64::acos),
        "atan" => unary(f64::atan),
        "floor" => unary(f64::floor),
        "ceil" => unary(f64::ceil),
        "round" => unary(f64::round),
        "sign" => unary(|x| if x > 0.0 { 1.0 } else if x < 0.0 { -1.0 } else { 0.0 }),
        "atan2" => binary(f64::atan2),
        "pow" => binary(f64::powf),
        "hypot" => binary(f64::hypot),
        "min" => Some((Func::Min, 2, usize::MAX)),
        "max" => Some((Func::Max, 2, usize::MAX)),
        _ => None,
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    fn error(&self, message: impl Into<String>) -> ExprError {
        ExprError { source: self.src.to_string(), offset: self.pos, message: message.into() }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn sum(&mut self) -> Result<Node, ExprError> {
        let mut node = self.product()?;
        loop {
            let op = if self.eat('+') {
                Op::Add
            } else if self.eat('-') {
                Op::Sub
            } else {
                return Ok(node);
            };
            node = Node::Bin(op, Box::new(node), Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Node, ExprError> {
        let mut node = self.unary()?;
        loop {
            let op = if self.eat('*') {
                Op::Mul
            } else if self.eat('/') {
                Op::Div
            } else if self.eat('%') {
                Op::Rem
            } else {
                return Ok(node);
            };
            node = Node::Bin(op, Box::new(node), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Node, ExprError> {
        if self.eat('-') {
            return Ok(Node::Neg(Box::new(self.unary()?)));
        }
        if self.eat('+') {
            return self.unary();
        }
        self.power()
    }

    fn power(&mut self) -> Result<Node, ExprError> {
        let base = self.atom()?;
        if self.eat('^') {
            return Ok(Node::Bin(Op::Pow, Box::new(base), Box::new(self.unary()?)));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Node, ExprError> {
        self.skip_ws();
        let start = self.pos;
        let Some(c) = self.rest().chars().next() else {
            return Err(self.error("expected a number, `left`, `right` or `(`, found the end"));
        };
        if c == '(' {
            self.pos += 1;
            let inner = self.sum()?;
            if !self.eat(')') {
                return Err(self.error("expected `)`"));
            }
            return Ok(inner);
        }
        if c.is_ascii_digit() || c == '.' {
            let len = number_len(self.rest());
            let text = &self.rest()[..len];
            let value = text.parse::<f64>().map_err(|_| self.error(format!("bad number {text:?}")))?;
            self.pos += len;
            return Ok(Node::Num(value));
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let len = self.rest().find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(self.rest().len());
            let name = &self.src[start..start + len];
            self.pos += len;
            return match name {
                "left" => Ok(Node::Left),
                "right" => Ok(Node::Right),
                "pi" => Ok(Node::Num(std::f64::consts::PI)),
                "tau" => Ok(Node::Num(std::f64::consts::TAU)),
                "e" => Ok(Node::Num(std::f64::consts::E)),
                _ => {
                    let Some((func, min_args, max_args)) = function(name) else {
                        self.pos = start;
                        return Err(self.error(format!("unknown name `{name}` (use left, right, pi, tau, e or a function)")));
                    };
                    if !self.eat('(') {
                        return Err(self.error(format!("expected `(` after function `{name}`")));
                    }
                    let mut args = vec![self.sum()?];
                    while self.eat(',') {
                        args.push(self.sum()?);
                    }
                    if !self.eat(')') {
                        return Err(self.error("expected `,` or `)`"));
                    }
                    if args.len() < min_args || args.len() > max_args {
                        self.pos = start;
                        let want = if min_args == max_args { min_args.to_string() } else { format!("at least {min_args}") };
                        return Err(self.error(format!("`{name}` takes {want} argument(s), got {}", args.len())));
                    }
                    Ok(Node::Call(func, args))
                }
            };
        }
        Err(self.error(format!("unexpected {c:?}")))
    }
}

/// Length of the number at the start of `s`: digits, a fraction, an exponent.
fn number_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            i = j;
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(s: &str, l: f64, r: f64) -> f64 {
        Expr::parse(s).unwrap().eval(l, r)
    }

    #[test]
    fn power_from_speed_and_torque() {
        let p = eval("2*pi/60*left*right", 288.2, -4.44);
        assert!((p - 2.0 * std::f64::consts::PI / 60.0 * 288.2 * -4.44).abs() < 1e-9);
    }

    #[test]
    fn precedence_and_functions() {
        assert_eq!(eval("1 + 2 * 3", 0.0, 0.0), 7.0);
        assert_eq!(eval("(1 + 2) * 3", 0.0, 0.0), 9.0);
        assert_eq!(eval("-2^2", 0.0, 0.0), -4.0);
        assert_eq!(eval("2^3^2", 0.0, 0.0), 512.0);
        assert_eq!(eval("10 - 4 - 3", 0.0, 0.0), 3.0);
        assert_eq!(eval("abs(left - right)", 1.0, 3.0), 2.0);
        assert_eq!(eval("max(left, right, 7)", 1.0, 3.0), 7.0);
        assert_eq!(eval("min(left,right)", 1.0, 3.0), 1.0);
        assert_eq!(eval("hypot(left, right)", 3.0, 4.0), 5.0);
        assert_eq!(eval("1.5e3 + 2E-1", 0.0, 0.0), 1500.2);
    }

    #[test]
    fn errors_point_at_the_bad_spot() {
        let e = Expr::parse("2*pi/60*(left*right").unwrap_err();
        assert_eq!(e.to_string(), "expected `)` at column 20\n  2*pi/60*(left*right\n                     ^");
        let e = Expr::parse("left * torque").unwrap_err();
        assert!(e.to_string().starts_with("unknown name `torque`"), "{e}");
        assert_eq!(e.offset, 7);
        let e = Expr::parse("abs(left, right)").unwrap_err();
        assert!(e.message.contains("takes 1 argument"), "{e}");
        assert!(Expr::parse("left +").unwrap_err().message.contains("found the end"));
        assert!(Expr::parse("left right").unwrap_err().message.contains("unexpected 'r'"));
    }
}
