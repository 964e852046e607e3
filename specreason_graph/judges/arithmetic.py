"""A deterministic check of the arithmetic stated in one reasoning step: a zero-cost judge.

:func:`check_step` finds chains of purely numeric expressions joined by ``=`` in plain text or
LaTeX and evaluates each consecutive pair exactly (sympy numbers, own parser, no ``eval``).

Checked: integers and decimals, ``1,000`` thousands separators, ``20%``; ``+ - * / ^`` and their
spellings ``× ⋅ · \\times \\cdot``, ``x`` between numbers, ``÷ \\div``, ``−``, ``**``; parentheses
and ``\\left( \\right)``; ``\\frac \\dfrac \\tfrac``, ``\\sqrt``. Dropped first: the ``$ \\( \\)
\\[ \\]`` delimiters, ``$``/``\\$`` currency, ``\\text{..}`` wrappers and unit words after numbers
(``16 eggs/day``). A right side ends where prose begins (``= 9 eggs per day, so ...``). A lone
decimal may be the other side rounded or truncated to the digits shown (``1/3 = 0.33``), and
decimals or roots compare within 1e-6 relative.

Skipped (not counted, so never a rejection): a side with a variable, a function, a constant or an
unknown LaTeX command; implicit multiplication and mixed numbers; ratios and times (``3:4``);
``50% of 10`` and other word operators; inequalities, ``≈ \\approx ~= := !=``; unit conversions
(``2 hours = 120 minutes``); exponents above 1000, numbers over 50 digits, results over ~5000
digits, division by zero, complex results. Nothing raises: any error skips the equation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

import sympy

__all__ = ["Check", "Equation", "check_step"]


@dataclass(frozen=True)
class Equation:
    text: str
    """The pair as evaluated, ``left = right`` (units and markup dropped)."""
    left: str
    right: str
    holds: bool


@dataclass(frozen=True)
class Check:
    equations: tuple[Equation, ...] = ()

    @property
    def false(self) -> tuple[Equation, ...]:
        return tuple(eq for eq in self.equations if not eq.holds)

    @property
    def verdict(self) -> bool | None:
        """False if any equation is false, True if at least one and all hold, None if none."""
        return None if not self.equations else not self.false


# --- normalisation: LaTeX and unicode to plain operators --------------------------------------

_CMD, _SEP = "¤", "¦"  # an unknown LaTeX command (poisons its neighbours); a neutral separator
_SPACES = {"quad", "qquad", "displaystyle", "textstyle", "left", "right", "big", "Big", "bigl",
           "bigr", "Bigl", "Bigr", "ldots", "cdots", "dots"}
_RELATIONS = {"approx", "neq", "ne", "le", "leq", "ge", "geq", "lt", "gt", "sim", "simeq", "equiv",
              "cong", "implies", "iff", "to", "rightarrow", "Rightarrow", "Longrightarrow",
              "longrightarrow", "therefore", "because"}
_MACRO = re.compile(r"\\(d?frac|tfrac|cfrac|sqrt|text|textrm|textbf|textit|mathrm|mathbf|mbox|"
                    r"boxed|operatorname)(?![A-Za-z])")
_ARG = re.compile(r"\\[A-Za-z]+|.", re.S)
_NUMBER = re.compile(r"\s*[0-9]+(?:\.[0-9]+)?\s*")


def _group(s: str, i: int) -> tuple[str, int]:
    """The macro argument at ``s[i]``: a ``{...}`` group, a command or one character."""
    while i < len(s) and s[i].isspace():
        i += 1
    if s[i:i + 1] != "{":
        m = _ARG.match(s, i)
        return (m.group(), m.end()) if m else ("", i)
    depth = 0
    for j in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[j], 0)
        if depth == 0:
            return s[i + 1:j], j + 1
    return s[i + 1:], len(s)


def _wrap(s: str) -> str:
    return s.strip() if _NUMBER.fullmatch(s) else f"({s})"


def _macros(s: str) -> str:
    """``\\frac``, ``\\sqrt`` and the text-like wrappers, innermost arguments first."""
    out, pos = [], 0
    while m := _MACRO.search(s, pos):
        out.append(s[pos:m.start()])
        name, i = m.group(1), m.end()
        if name.endswith("frac"):
            a, i = _group(s, i)
            b, i = _group(s, i)
            out.append(f"({_wrap(_macros(a))}/{_wrap(_macros(b))})")
        elif name == "sqrt":
            index = ""
            if s[i:i + 1] == "[" and (close := s.find("]", i)) > 0:
                index, i = s[i + 1:close], close + 1
            a, i = _group(s, i)
            a = _wrap(_macros(a))
            out.append(f"({a}^(1/{_wrap(_macros(index))}))" if index else f"√{a}")
        else:
            a, i = _group(s, i)
            out.append(f" {_macros(a)} ")
        pos = i
    return "".join(out) + s[pos:]


def _command(m: re.Match[str]) -> str:
    name = m.group(1)
    return " " if name in _SPACES else f" {_SEP} " if name in _RELATIONS else f" {_CMD} "


_UNICODE = str.maketrans({"{": "(", "}": ")", "&": " ", "×": "*", "⋅": "*", "·": "*", "∙": "*",
                          "÷": "/", "−": "-", "＝": "="})


def _normalise(s: str) -> str:
    s = re.sub(r"\\\\(?=[A-Za-z()\[\]$%=])", r"\\", s)  # JSON-doubled backslashes
    s = re.sub(r"\\[()\[\]]|\\?\$", " ", s)  # math delimiters and currency
    s = s.replace("\\%", "%").replace("{,}", ",").replace("\\=", "=")
    s = re.sub(r"(?<=[0-9])\\,(?=[0-9]{3}(?![0-9]))", "", s)
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])\s*\.?", " ", s)
    s = re.sub(r"\\(?:times|cdot|ast)(?![A-Za-z])", "*", s)
    s = re.sub(r"\\div(?![A-Za-z])", "/", s)
    s = re.sub(r"\\([A-Za-z]+)", _command, _macros(s))
    s = s.replace("\\", " ").translate(_UNICODE)
    s = re.sub(r"[<>!~:≤≥]=|=[<>]", f" {_SEP} ", s)
    s = re.sub(r"={2,}", "=", s)
    s = re.sub(r"(?<=[0-9)])\s*\*\*\s*(?=[0-9(.+-])", "^", s).replace("**", " ")
    s = re.sub(r"(?<=[0-9)])\s*[xX]\s*(?=[0-9(])", "*", s)
    return re.sub(r"(?<![0-9.,])[0-9]{1,3}(?:,[0-9]{3})+(?![0-9]|,[0-9])",
                  lambda m: m.group().replace(",", ""), s)


# --- tokens, units and the two sides of each "=" ----------------------------------------------

@dataclass(frozen=True)
class _Tok:
    kind: str  # num op lp rp eq sqrt cmd word other unit
    text: str
    sp: bool = False  # whitespace before it
    nl: bool = False  # first on its line


_TOKEN = re.compile(r"(?P<ws>\s*)(?:(?P<num>(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:\s*%)?)|(?P<op>[-+*/^])"
                    r"|(?P<lp>\()|(?P<rp>\))|(?P<eq>=)|(?P<sqrt>√)|(?P<cmd>¤)|(?P<word>[^\W\d_]+)"
                    r"|(?P<other>\S))")
_NUMBERISH = {"half", "halves", "third", "thirds", "quarter", "quarters", "fourth", "fifth", "tenth",
              "dozen", "dozens", "hundred", "hundreds", "thousand", "thousands", "million",
              "millions", "billion", "billions", "trillion", "percent", "pct", "twice", "double",
              "triple", "thrice", "score", "more", "less", "fewer", "than"}
_OPWORDS = {"times", "plus", "minus", "over", "divided", "multiplied", "squared", "cubed", "mod",
            "modulo", "choose", "factorial", "power", "raised", "sqrt", "root", "log", "ln", "lg",
            "exp", "sin", "cos", "tan", "gcd", "lcm", "max", "min", "floor", "ceil", "abs", "pi",
            "of", "by"}
_RIGHT_BLOCK = _NUMBERISH | _OPWORDS
_LEFT_BLOCK = _RIGHT_BLOCK | {"into", "and", "from", "to", "per"}
_DETERMINERS = {"the", "these", "those", "all", "her", "his", "its", "their", "my", "our", "your",
                "each", "every", "remaining"}
_EXPR = {"num", "op", "lp", "rp", "sqrt", "unit"}
Side = tuple[list[_Tok], list[str]]  # expression tokens, unit words


def _tokens(s: str) -> list[_Tok]:
    return [_Tok(m.lastgroup or "", m.group(m.lastgroup or 0), bool(m["ws"]),
                 "\n" in m["ws"] or m.start() == 0) for m in _TOKEN.finditer(s)]


def _is_unit(t: _Tok) -> bool:
    return t.kind == "word" and t.sp and len(t.text) > 1 and t.text.lower() not in _LEFT_BLOCK


def _units(toks: list[_Tok]) -> list[_Tok]:
    """A unit word (``eggs``, ``eggs/day``, ``eggs per day``) after a number becomes one token."""
    out, i = [], 0
    while i < len(toks):
        out.append(toks[i])
        i += 1
        if out[-1].kind != "num" or i >= len(toks) or not _is_unit(toks[i]):
            continue
        j = i + 1
        if j + 1 < len(toks) and toks[j].text.lower() in ("/", "per") and toks[j + 1].kind == "word":
            j += 2
        if j < len(toks) and toks[j].text == "^":
            continue
        out.append(_Tok("unit", " ".join(t.text for t in toks[i:j]), True))
        i = j
    return out


def _adjacent_values(toks: list[_Tok]) -> bool:
    return any(a.kind in ("num", "rp") and b.kind in ("num", "lp", "sqrt") for a, b in zip(toks, toks[1:]))


def _left(seg: list[_Tok]) -> Side | None:
    """The numeric expression that ends ``seg`` (the left side of the ``=`` after it)."""
    j = len(seg)
    while j > 0 and seg[j - 1].kind in _EXPR:
        if seg[j - 1].kind == "unit" and j < len(seg) and seg[j].kind not in ("op", "rp"):
            break
        j -= 1
        if seg[j].nl:
            break
    cut, stack = 0, []  # start after an unmatched "(" or ")"
    for k, t in enumerate(seg[j:]):
        if t.kind == "lp":
            stack.append(k)
        elif t.kind == "rp":
            cut, stack = (cut, stack[:-1]) if stack else (k + 1, [])
    start = j + (stack[-1] + 1 if stack else cut)
    run, prev = seg[start:], (seg[start - 1] if start else None)
    if len(run) > 1 and run[0].kind == "op" and run[0].text in "-+*" and run[0].nl and run[1].sp:
        run, prev = run[1:], None  # a markdown bullet
    if not run or run[0].kind == "op" and (run[0].text not in "-+" or prev and prev.kind not in ("other", "lp")):
        return None  # "2x + 3", "x - 3"
    if prev is not None:
        back = start - 1
        while back > 0 and seg[back].kind == "word" and seg[back].text.lower() in _DETERMINERS:
            back -= 1
        word = seg[back].text.lower() if seg[back].kind == "word" else ""
        if (prev.kind in ("cmd", "op", "sqrt") or word in _LEFT_BLOCK or len(word) == 1 and word not in "ai"
                or not run[0].sp and prev.kind != "lp" and prev.text not in ("[", '"', "'", "“")):
            return None
    expr = [t for t in run if t.kind != "unit"]
    return None if _adjacent_values(expr) else (expr, [t.text for t in run if t.kind == "unit"])


def _right(seg: list[_Tok]) -> Side | None:
    """The numeric expression that starts ``seg``, up to the prose that follows it."""
    toks: list[_Tok] = []
    units: list[str] = []
    depth = i = 0
    while i < len(seg):
        t = seg[i]
        if t.kind == "unit":
            units.append(t.text)
            i += 1
            if i == len(seg) or seg[i].kind in ("op", "rp"):
                continue
            break
        if t.kind not in _EXPR or t.kind == "rp" and depth == 0 or toks and t.nl:
            break
        if _adjacent_values([toks[-1], t] if toks else []):
            if t.kind == "lp" and t.sp and i + 1 < len(seg) and seg[i + 1].kind not in _EXPR:
                break  # "= 14 (since ...)"
            return None
        depth += (t.kind == "lp") - (t.kind == "rp")
        toks.append(t)
        i += 1
    nxt, after = (seg[i] if i < len(seg) else None), (seg[i + 1] if i + 1 < len(seg) else None)
    if not toks or depth or toks[-1].kind == "op":
        return None
    if nxt is None:
        return toks, units
    if nxt.kind == "cmd" or nxt.kind == "word" and (
            not nxt.sp or nxt.text.lower() in _RIGHT_BLOCK or len(nxt.text) == 1 and nxt.text not in "aAI"):
        return None
    if nxt.kind == "other" and not nxt.sp and (
            nxt.text not in ".,;:?)]\"'”’" or after is not None and after.kind == "num" and not after.sp):
        return None
    return toks, units


# --- evaluation ---------------------------------------------------------------------------------

class _Refuse(Exception):
    """Not a safe, finite, real number: skip the equation."""


def _log10(v: sympy.Expr) -> float:
    if v.is_Rational:
        return abs(math.log10(abs(int(v.p))) - math.log10(int(v.q)))
    return abs(math.log10(abs(float(sympy.N(v)))))


def _checked(v: sympy.Expr) -> sympy.Expr:
    if v.is_Rational and max(abs(int(v.p)).bit_length(), int(v.q).bit_length()) > 20000:
        raise _Refuse
    if v.is_Rational or v.is_finite and v.is_real:
        return v
    raise _Refuse


def _power(b: sympy.Expr, e: sympy.Expr) -> sympy.Expr:
    if not e.is_Rational or b == 0 and e <= 0:
        raise _Refuse
    if e.is_Integer:
        if abs(e) > 1000 or b != 0 and abs(int(e)) * _log10(b) > 5000:
            raise _Refuse
    elif not (b.is_Rational and b >= 0 and e.q <= 100 and abs(e.p) <= 1000
              and max(abs(int(b.p)), int(b.q)) < 10 ** 50):
        raise _Refuse
    return _checked(sympy.Pow(b, e))


def _number(text: str) -> sympy.Expr:
    digits = text.rstrip("% \t\n")
    if sum(c.isdigit() for c in digits) > 50 or re.match(r"0[0-9]", digits):
        raise _Refuse  # too long, or a code or a date ("01")
    v = sympy.Rational(digits)
    return v / 100 if text.endswith("%") else v


def _value(toks: list[_Tok]) -> sympy.Expr:
    """Evaluate with a small recursive-descent parser: + - * / ^ ( ) √ over sympy numbers."""
    pos = 0

    def take(*texts: str) -> str | None:
        nonlocal pos
        if pos < len(toks) and toks[pos].kind != "num" and toks[pos].text in texts:
            pos += 1
            return toks[pos - 1].text
        return None

    def expr() -> sympy.Expr:
        v = term()
        while op := take("+", "-"):
            v = _checked(v + term() if op == "+" else v - term())
        return v

    def term() -> sympy.Expr:
        v = unary()
        while op := take("*", "/"):
            w = unary()
            if op == "/" and w == 0:
                raise _Refuse
            v = _checked(v * w if op == "*" else v / w)
        return v

    def unary() -> sympy.Expr:
        if op := take("-", "+"):
            return -unary() if op == "-" else unary()
        b = primary()
        return _power(b, unary()) if take("^") else b

    def primary() -> sympy.Expr:
        nonlocal pos
        if take("("):
            v = expr()
            if not take(")"):
                raise _Refuse
            return v
        if take("√"):
            return _power(primary(), sympy.Rational(1, 2))
        if pos < len(toks) and toks[pos].kind == "num":
            pos += 1
            return _number(toks[pos - 1].text)
        raise _Refuse

    v = expr()
    if pos != len(toks):
        raise _Refuse
    return v


def _fraction(v: sympy.Expr) -> Fraction:
    return Fraction(int(v.p), int(v.q)) if v.is_Rational else Fraction(str(sympy.N(v, 40)))


def _rounded(x: Fraction, side: list[_Tok]) -> bool:
    """``side`` is one decimal literal and ``x`` rounded or truncated to its digits."""
    sign = -1 if side[0].text == "-" else 1
    body = side[1:] if side[0].kind == "op" else side
    if len(body) != 1 or body[0].kind != "num" or "." not in body[0].text or "%" in body[0].text:
        return False
    scale = 10 ** len(body[0].text.split(".")[1])
    literal = sign * Fraction(body[0].text)
    return abs(x - literal) * scale <= Fraction(1, 2) or int(x * scale) == literal * scale


def _holds(lt: list[_Tok], rt: list[_Tok], lv: sympy.Expr, rv: sympy.Expr) -> bool:
    lf, rf = _fraction(lv), _fraction(rv)
    if lf == rf:
        return True
    approx = not (lv.is_Rational and rv.is_Rational) or any("." in t.text for t in lt + rt)
    if approx and abs(lf - rf) <= Fraction(1, 10 ** 6) * max(abs(lf), abs(rf)):
        return True
    return _rounded(lf, rt) or _rounded(rf, lt)


def _render(toks: list[_Tok]) -> str:
    binary = [t.kind == "op" and k > 0 and toks[k - 1].kind in ("num", "rp") for k, t in enumerate(toks)]
    return "".join(f" {t.text} " if b and t.text != "^" else re.sub(r"\s+", "", t.text)
                   for t, b in zip(toks, binary)).strip()


def _unit_key(unit: str) -> str:
    return " ".join(w.lower().removesuffix("s") for w in unit.split())


def _mixed_percent(toks: list[_Tok]) -> bool:
    """``100 + 10%`` means 110 to the writer: skip."""
    nums = [t.text.endswith("%") for t in toks if t.kind == "num"]
    return any(nums) and not all(nums) and any(t.text in "+-" for t in toks if t.kind == "op")


def _equation(before: list[_Tok], after: list[_Tok]) -> Equation | None:
    left, right = _left(before), _right(after)
    if left is None or right is None:
        return None
    (lt, lu), (rt, ru) = left, right
    lunits, runits = {_unit_key(u) for u in lu}, {_unit_key(u) for u in ru}
    if lunits and lunits != runits or _mixed_percent(lt) or _mixed_percent(rt):
        return None  # a conversion ("2 hours = 120 minutes") or an ambiguous percentage
    try:
        holds = _holds(lt, rt, _value(lt), _value(rt))
    except Exception:  # _Refuse, and anything sympy raises on odd input
        return None
    left_text, right_text = _render(lt), _render(rt)
    return Equation(f"{left_text} = {right_text}", left_text, right_text, holds)


def check_step(text: str) -> Check:
    """Every numeric equation in ``text``, evaluated; never raises."""
    try:
        segments: list[list[_Tok]] = [[]]
        for t in _units(_tokens(_normalise(str(text)))):
            if t.kind == "eq":
                segments.append([])
            else:
                segments[-1].append(t)
        found = (_equation(a, b) for a, b in zip(segments, segments[1:]))
        return Check(tuple(eq for eq in found if eq is not None))
    except Exception:
        return Check()
