"""A deterministic check of the arithmetic stated in one reasoning step: a zero-cost judge.

:func:`check_step` finds chains of purely numeric expressions joined by ``=`` in plain text or
LaTeX and evaluates each consecutive pair exactly (sympy numbers, own parser, no ``eval``).

Checked: integers and decimals, ``1,000`` thousands separators, ``20%``; ``+ - * / ^`` and their
spellings ``× ⋅ · \\times \\cdot``, ``x`` between numbers, ``÷ \\div``, ``−`` (and ``–`` between
numbers), ``**``; parentheses and ``\\left( \\right)``; ``\\frac \\dfrac \\tfrac``, ``\\sqrt``.
Dropped first: the ``$ \\( \\) \\[ \\]`` delimiters, ``$``/``\\$`` currency, ``\\text{..}``
wrappers and unit words after numbers (``16 eggs/day``, ``$50/suitcase``). A right side ends where
prose begins (``= 9 eggs per day, so ...``). A lone decimal may be the other side rounded or
truncated to the digits shown (``1/3 = 0.33``); decimals and roots compare within 1e-6 relative;
an equation with ``%`` on one side holds under either reading (``20% = 0.2``, ``0.25 * 100 = 25%``).

Skipped (not counted, so never a rejection): a side with a variable, a function, a constant or an
unknown LaTeX command; implicit multiplication and mixed numbers; ratios, times, dates, factorials,
repeating decimals; word operators (``3 times 4``, ``50% of 10``, ``3 and 4``, ``log 100``) and a
lone number inside a phrase (``9 eggs at $2 = $18``); inequalities, ``≈ \\approx ~= := !=``; unit
conversions (``2 hours = 120``, ``1 hour + 30 minutes = 90``); exponents above 1000, numbers over
50 digits, results over ~6000 digits, division by zero, complex results. Nothing raises: an error
skips the equation.
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
    """The pair as evaluated, ``left = right`` (normalised: units and markup dropped)."""
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


# --- normalisation: LaTeX and unicode to plain operators ----------------------------------------

_CMD, _SEP = "¤", "¦"  # an unknown LaTeX command (poisons its neighbours); a neutral separator
_SPACES = frozenset({"quad", "qquad", "displaystyle", "textstyle", "big", "Big", "bigl", "bigr", "Bigl",
                     "Bigr", "ldots", "cdots", "dots"})
_RELATIONS = frozenset({"approx", "neq", "ne", "le", "leq", "ge", "geq", "lt", "gt", "sim", "simeq",
                        "equiv", "cong", "implies", "iff", "to", "rightarrow", "Rightarrow",
                        "longrightarrow", "Longrightarrow", "therefore", "because"})
_MACRO = re.compile(r"\\(d?frac|tfrac|cfrac|sqrt|text|textrm|textbf|textit|mathrm|mathbf|mbox|"
                    r"boxed|operatorname)(?![A-Za-z])")
_UNICODE = str.maketrans({"{": "(", "}": ")", "&": " ", "×": "*", "⋅": "*", "·": "*", "∙": "*",
                          "÷": "/", "−": "-", "＝": "="})


def _group(s: str, i: int) -> tuple[str, int]:
    """The macro argument at ``s[i]``: a ``{...}`` group, a command or one character."""
    while i < len(s) and s[i].isspace():
        i += 1
    if s[i:i + 1] != "{":
        m = re.compile(r"\\[A-Za-z]+|.", re.S).match(s, i)
        return (m.group(), m.end()) if m else ("", i)
    depth = 0
    for j in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[j], 0)
        if depth == 0:
            return s[i + 1:j], j + 1
    return s[i + 1:], len(s)


def _macros(s: str, depth: int = 0) -> str:
    """``\\frac``, ``\\sqrt`` and the text-like wrappers, arguments first (at most 20 deep)."""
    if depth > 20:
        raise RecursionError("LaTeX nested too deep")

    def wrap(a: str) -> str:
        a = _macros(a, depth + 1)
        return a.strip() if re.fullmatch(r"\s*[0-9.]+\s*", a) else f"({a})"

    def arg(i: int) -> tuple[str, int]:
        a, i = _group(s, i)
        return wrap(a), i

    out, pos = [], 0
    while m := _MACRO.search(s, pos):
        out.append(s[pos:m.start()])
        name, i = m.group(1), m.end()
        if name.endswith("frac"):
            a, i = arg(i)
            b, i = arg(i)
            out.append(f"({a}/{b})")
        elif name == "sqrt":
            index = ""
            if s[i:i + 1] == "[" and (close := s.find("]", i)) > 0:
                index, i = wrap(s[i + 1:close]), close + 1
            a, i = arg(i)
            out.append(f"({a}^(1/{index}))" if index else f"√{a}")
        else:
            a, i = _group(s, i)
            out.append(f" {_macros(a, depth + 1)} ")
        pos = i
    return "".join(out) + s[pos:]


def _normalise(s: str) -> str:
    s = re.sub(r"\\\\(?=[A-Za-z()\[\]$%=])", r"\\", s)  # JSON-doubled backslashes
    s = re.sub(r"\\[()\[\]]|\\?\$", " ", s)  # math delimiters and currency
    s = s.replace("\\%", "%").replace("{,}", ",").replace("\\=", "=").replace("\\!", "")
    s = re.sub(r"(?<=[0-9])\\,(?=[0-9]{3}(?![0-9]))", "", s)
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])\s*\.?", " ", s)
    s = re.sub(r"\\(?:times|cdot|ast)(?![A-Za-z])", "*", re.sub(r"\\div(?![A-Za-z])", "/", s))
    s = re.sub(r"\\([A-Za-z]+)", lambda m: " " if m[1] in _SPACES else
               f" {_SEP if m[1] in _RELATIONS else _CMD} ", _macros(s))
    s = s.replace("\\", " ").translate(_UNICODE)
    s = re.sub(r"={2,}", "=", re.sub(r"[<>!~:≤≥]=|=[<>]", f" {_SEP} ", s))
    s = re.sub(r"(?<=[0-9)])\s*\*\*\s*(?=[0-9(.+-])", "^", s).replace("**", " ")
    s = re.sub(r"(?<=[0-9)])\s*[xX]\s*(?=[0-9(])", "*", s)
    s = re.sub(r"(?<=[0-9)])(\s*)–(?=\s*[0-9(])", r"\1-", s)  # an en dash between numbers
    return re.sub(r"(?<![0-9.,])[0-9]{1,3}(?:,[0-9]{3})+(?![0-9]|,[0-9])", lambda m: m[0].replace(",", ""), s)


# --- tokens, units and the two sides of each "=" ------------------------------------------------

@dataclass(frozen=True)
class _Tok:
    kind: str  # num op lp rp eq sqrt cmd word other, and unit (a unit word after a number)
    text: str
    sp: bool = False  # whitespace before it
    nl: bool = False  # first on its line


_TOKEN = re.compile(r"(?P<ws>\s+)|(?P<num>(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:\s*+%)?)|(?P<op>[-+*/^])"
                    r"|(?P<lp>\()|(?P<rp>\))|(?P<eq>=)|(?P<sqrt>√)|(?P<cmd>¤)|(?P<word>[^\W\d_]+)"
                    r"|(?P<other>.)", re.S)
# Word operators: a number next to one is not a whole side ("3 times 4 = 12", "half of 10 = 5").
_BLOCK = frozenset({"half", "halves", "third", "thirds", "quarter", "quarters", "fourth", "fifth", "tenth",
                    "dozen", "dozens", "hundred", "hundreds", "thousand", "thousands", "million",
                    "millions", "billion", "billions", "trillion", "percent", "pct", "twice", "double",
                    "triple", "thrice", "times", "plus", "minus", "over", "divided", "multiplied",
                    "squared", "cubed", "mod", "modulo", "choose", "factorial", "power", "raised", "sqrt",
                    "root", "log", "ln", "lg", "exp", "sin", "cos", "tan", "gcd", "lcm", "max", "min",
                    "floor", "ceil", "abs", "pi", "by", "one", "two", "three", "four", "five", "six",
                    "seven", "eight", "nine", "ten", "eleven", "twelve"})
_LEFT_BLOCK = _BLOCK | {"more", "less", "fewer", "than"}  # "5 more than 3 = 8"
_LINKS = frozenset({"and", "into", "from", "to", "per", "of"})  # after a value: "3 and 4 = 7", "50% of 10"
_DETERMINERS = frozenset({"the", "these", "those", "all", "her", "his", "its", "their", "my", "our",
                          "your", "each", "every", "remaining"})
_LEADS = frozenset({"is", "was", "be", "so", "then", "thus", "hence", "get", "gets", "gives", "becomes",
                    "yields"})  # "is -3 + 5"
_NOT_UNIT = _LEFT_BLOCK | _LINKS | _LEADS
_PUNCT = frozenset(".,:;!?\"'“”‘’[#<>≤≥≈≠" + _SEP)  # may precede a left side ("–" may not)
_EXPR = {"num", "op", "lp", "rp", "sqrt", "unit"}
_Side = tuple[list[_Tok], list[str]]  # expression tokens, unit words


def _tokens(s: str) -> list[_Tok]:
    """Tokens, with every unit word (``eggs``, ``eggs/day``, ``eggs per day``) after a number as one."""
    toks, ws = [], "\n"
    for m in _TOKEN.finditer(s):
        if m.lastgroup == "ws":
            ws = m[0]
        else:
            toks.append(_Tok(m.lastgroup or "", m[0], bool(ws), "\n" in ws))
            ws = ""
    out, i = [], 0
    while i < len(toks):
        out.append(toks[i])
        i += 1
        if out[-1].kind == "num" and (j := _unit_end(toks, i)) > i:
            out.append(_Tok("unit", " ".join(t.text for t in toks[i:j]), True))
            i = j
    return out


def _unit_end(toks: list[_Tok], i: int) -> int:
    """Where the unit after a number at ``toks[i:]`` ends: "eggs", "eggs/day", "eggs per day", "/day"."""
    def word(k: int) -> bool:
        return k < len(toks) and toks[k].kind == "word" and len(toks[k].text) > 1 \
            and toks[k].text.lower() not in _NOT_UNIT

    j = i + 1 if word(i) and toks[i].sp else i
    if j + 1 < len(toks) and word(j + 1) and (toks[j].text == "/" and not toks[j + 1].sp
                                              and (j > i or not toks[j].sp) or toks[j].text.lower() == "per"):
        j += 2
    return i if j < len(toks) and toks[j].text == "^" else j  # not "km^2"


def _joins(seg: list[_Tok], k: int) -> bool:
    """``seg[k]`` continues an expression past a unit: "16 eggs - 3", not "gives -3" or "eggs, so"."""
    if k >= len(seg):
        return True
    signed = seg[k].text in "-+" and seg[k].sp and k + 1 < len(seg) and not seg[k + 1].sp
    return seg[k].kind == "rp" or seg[k].kind == "op" and seg[k].text != "^" and not signed


def _adjacent_values(toks: list[_Tok]) -> bool:
    pairs = zip(toks, toks[1:], strict=False)
    return any(a.kind in ("num", "rp") and b.kind in ("num", "lp", "sqrt") for a, b in pairs)


def _left(seg: list[_Tok], chained: bool) -> _Side | None:
    """The numeric expression that ends ``seg`` (the left side of the ``=`` after it)."""
    j = len(seg)
    while j > 0 and seg[j - 1].kind in _EXPR:
        if seg[j - 1].kind == "unit" and not _joins(seg, j):
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
    if len(run) > 1 and run[0].text in "-+*" and run[0].kind == "op" and run[0].nl and run[1].sp:
        run, prev = run[1:], None  # a markdown bullet
    if not run or run[0].kind == "op" and (run[0].text not in "-+" or len(run) < 2 or prev and not (
            prev.kind in ("other", "lp") or prev.text.lower() in _LEADS and not run[1].sp)):
        return None  # "2x + 3", "x - 3" (but "so -3 + 5")
    if prev is not None:
        back = start - 1
        while back > 0 and seg[back].text.lower() in _DETERMINERS:
            back -= 1
        word = seg[back].text.lower() if seg[back].kind == "word" else ""
        first = back - 1  # the value before a link word, unless it ends the previous equation
        while first > 0 and seg[first - 1].kind in _EXPR:
            first -= 1
        linked = word in _LINKS and back > 0 and (seg[back - 1].kind in ("num", "unit", "rp")
                                                  or seg[back - 1].text.lower() in _BLOCK) \
            and (first > 0 or not chained)
        if (prev.kind in ("cmd", "op", "sqrt") or word in _LEFT_BLOCK or linked
                or prev.kind == "other" and prev.text not in _PUNCT
                or len(word) == 1 and word not in "ai" and not (back and seg[back - 1].text in ("'", "’"))
                or not run[0].sp and prev.kind != "lp" and prev.text not in ("[", '"', "'", "“")):
            return None
    expr = [t for t in run if t.kind != "unit"]
    if _adjacent_values(expr) or len(expr) == 1 and prev and prev.kind in ("word", "unit") \
            and prev.text.lower() not in _LEADS:
        return None  # a lone number inside a phrase: "9 eggs at $2 = $18"
    return expr, [t.text for t in run if t.kind == "unit"]


def _right(seg: list[_Tok]) -> _Side | None:
    """The numeric expression that starts ``seg``, up to the prose that follows it."""
    toks: list[_Tok] = []
    units: list[str] = []
    depth = i = 0
    while i < len(seg):
        t = seg[i]
        if t.kind == "unit":
            units.append(t.text)
            i += 1
            if _joins(seg, i):
                continue
            return (toks, units) if toks and not depth and toks[-1].kind != "op" else None  # then prose
        if t.kind not in _EXPR or t.kind == "rp" and depth == 0 or toks and t.nl:
            break
        if toks and _adjacent_values([toks[-1], t]):
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
            not nxt.sp or len(nxt.text) == 1 and nxt.text not in "aI"
            or nxt.text.lower() in _BLOCK | {"of"} and not (after is None or after.text in ".,;:!?")):
        return None  # "= 3x", "= 2\pi", "= 5 times 2" (but "= 401 times.")
    if nxt.kind == "other" and not nxt.sp and (
            nxt.text not in ".,;:?]\"'”’…" or nxt.text in ".,:" and after is not None
            and (not after.sp or after.kind == "cmd") and (nxt.text, after.text) != (".", ".")):
        return None  # "= 3!", "= 1,5", "= 6:8", "= 0.\overline{3}" (but "= 0.333...")
    return toks, units


# --- evaluation ---------------------------------------------------------------------------------

class _Refuse(Exception):
    """Not a safe, finite, real number: skip the equation."""


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
        log = math.log10(abs(int(b.p))) - math.log10(int(b.q)) if b.is_Rational else \
            math.log10(abs(float(sympy.N(b))))
        if abs(e) > 1000 or b != 0 and abs(int(e) * log) > 5000:
            raise _Refuse
    elif not (b.is_Rational and b >= 0 and e.q <= 100 and abs(e.p) <= 1000 and max(b.p, b.q) < 10 ** 50):
        raise _Refuse
    return _checked(sympy.Pow(b, e))


def _value(toks: list[_Tok], percent: bool = True) -> sympy.Expr:
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
            if take(")"):
                return v
        elif take("√"):
            return _power(primary(), sympy.Rational(1, 2))
        elif pos < len(toks) and toks[pos].kind == "num":
            pos += 1
            digits = toks[pos - 1].text.rstrip("% \t\n")
            if sum(c.isdigit() for c in digits) <= 50 and not re.match(r"0[0-9]", digits):  # not "01"
                return sympy.Rational(digits) / (100 if percent and "%" in toks[pos - 1].text else 1)
        raise _Refuse

    v = expr()
    if pos != len(toks):
        raise _Refuse
    return v


def _rounded(x: Fraction, side: list[_Tok]) -> bool:
    """``side`` is one decimal literal and ``x`` rounded or truncated to its digits."""
    body = side[1:] if side[0].kind == "op" else side
    if len(body) != 1 or body[0].kind != "num" or "." not in body[0].text or "%" in body[0].text:
        return False
    scale = 10 ** len(body[0].text.split(".")[1])
    literal = (-1 if side[0].text == "-" else 1) * Fraction(body[0].text)
    return abs(x - literal) * scale <= Fraction(1, 2) or int(x * scale) == literal * scale


def _holds(lt: list[_Tok], rt: list[_Tok], percent: bool = True) -> bool:
    lv, rv = _value(lt, percent), _value(rt, percent)
    lf, rf = (Fraction(int(v.p), int(v.q)) if v.is_Rational else Fraction(str(sympy.N(v, 40)))
              for v in (lv, rv))
    approx = not (lv.is_Rational and rv.is_Rational) or any("." in t.text for t in lt + rt)
    return (lf == rf or approx and abs(lf - rf) <= max(abs(lf), abs(rf)) / 10 ** 6
            or _rounded(lf, rt) or _rounded(rf, lt))


def _render(toks: list[_Tok]) -> str:
    out = [f" {t.text} " if t.kind == "op" and t.text != "^" and k and toks[k - 1].kind in ("num", "rp")
           else re.sub(r"\s+", "", t.text) for k, t in enumerate(toks)]
    return "".join(out).strip()


def _equation(before: list[_Tok], after: list[_Tok], chained: bool) -> Equation | None:
    left, right = _left(before, chained), _right(after)
    if left is None or right is None:
        return None
    (lt, lu), (rt, ru) = left, right
    units = [{" ".join(w.lower().removesuffix("s") for w in u.split()) for u in us} for us in (lu, ru)]
    binary = [t.text for k, t in enumerate(lt) if t.kind == "op" and k and lt[k - 1].kind in ("num", "rp")]
    mixed = units[0] and (len(units[0]) > 1 or units[1]) and any(op in "+-/" for op in binary)
    if units[0] != units[1] and (len(lt) == 1 or mixed):
        return None  # a conversion: "2 hours = 120", "$0.05 = 5 cents", "1 hour + 30 minutes = 90"
    for side in (lt, rt):
        percent = [t.text.endswith("%") for t in side if t.kind == "num"]
        if any(percent) and not all(percent) and any(t.text in "+-" for t in side if t.kind == "op"):
            return None  # "100 + 10%" means 110 to its writer
    with_percent = [side for side in (lt, rt) if any("%" in t.text for t in side)]
    if len(with_percent) == 1:  # "20% = 0.2" and "0.25 * 100 = 25%" both hold
        holds = _holds(lt, rt) or _holds(lt, rt, percent=False)
        if not holds and all("%" in t.text or t.text in "+-" for t in with_percent[0]):
            return None  # "48 = 100% + 20% (of the number)": too loose to reject
    else:
        holds = _holds(lt, rt)
    return Equation(f"{_render(lt)} = {_render(rt)}", _render(lt), _render(rt), holds)


def check_step(text: str) -> Check:
    """Every numeric equation in ``text``, evaluated; never raises."""
    try:
        segments: list[list[_Tok]] = [[]]
        for t in _tokens(_normalise(str(text))):
            if t.kind == "eq":
                segments.append([])
            else:
                segments[-1].append(t)
    except Exception:  # e.g. LaTeX nested too deep
        return Check()
    found = []
    for k, (before, after) in enumerate(zip(segments, segments[1:], strict=False)):
        try:
            found.append(_equation(before, after, k > 0))
        except Exception:  # _Refuse, and anything sympy raises on odd input: skip this one
            continue
    return Check(tuple(eq for eq in found if eq is not None))
