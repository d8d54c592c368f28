"""Size expressions in block bodies: ``$planes * 4``, ``$channels // 2``, ``make_divisible(...)``.

A string in a block's layers that holds a ``$name`` and anything more than that one reference
is an expression over the block's arguments and the built-in ``$channels``. It is parsed by
the small grammar below (never by Python's ``eval``) and evaluated exactly, in fractions, when
the block is used; the value must be a non-negative integer (a size, a stride, a padding)::

    expr     := term (("+" | "-") term)*
    term     := unary (("*" | "//" | "/" | "%") unary)*
    unary    := "-" unary | atom
    atom     := INTEGER | DECIMAL | "$" NAME | FUNCTION "(" expr ("," expr)* ")" | "(" expr ")"
    FUNCTION := min | max | make_divisible

``make_divisible(v, d)`` is torchvision's ``_make_divisible``: ``v`` rounded to the nearest
multiple of ``d``, at least ``d`` and never below 90 % of ``v`` (the squeeze-and-excitation
sizes of MobileNetV3 and EfficientNet). Errors (``ExpressionError``) show the expression and
its evaluated parts; the caller adds where it stands in the spec.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|\$(?P<ref>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>//|[-+*/%(),]))"
)
_REFERENCE = re.compile(r"^\$[A-Za-z_][A-Za-z0-9_]*$")


class ExpressionError(Exception):
    """An expression that does not parse or evaluate; the message shows it and its parts."""


def is_expression(value: object) -> bool:
    """True for a string that holds a ``$name`` and is more than one plain reference."""
    return isinstance(value, str) and "$" in value and not _REFERENCE.match(value.strip())


def _make_divisible(v: Fraction, divisor: Fraction) -> Fraction:
    """torchvision's ``_make_divisible(v, divisor)`` (min_value = divisor), exactly."""
    if divisor <= 0 or divisor.denominator != 1:
        raise ValueError(f"make_divisible needs a positive integer divisor, not {_show(divisor)}")
    new = max(divisor, math.floor(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < Fraction(9, 10) * v else Fraction(new)


FUNCTIONS: dict[str, tuple[int, Callable[..., Fraction]]] = {
    "min": (-1, lambda *args: min(args)),
    "max": (-1, lambda *args: max(args)),
    "make_divisible": (2, _make_divisible),
}


_OPERATIONS: dict[str, Callable[[Fraction, Fraction], Fraction]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "//": lambda a, b: Fraction(a // b),
    "%": lambda a, b: a % b,
}


def _show(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


@dataclass(frozen=True)
class Node:
    """A parsed expression: a number, a ``$reference``, an operation or a function call."""

    kind: str  # "number", "ref", "op", "call", "neg"
    text: str  # the number's digits, the reference's or function's name, the operator
    args: tuple[Node, ...] = ()

    def source(self) -> str:
        """The node written back as an expression."""
        if self.kind == "number":
            return self.text
        if self.kind == "ref":
            return f"${self.text}"
        if self.kind == "neg":
            return f"-{self.args[0].source()}"
        if self.kind == "call":
            return f"{self.text}({', '.join(a.source() for a in self.args)})"
        left, right = self.args
        return f"({left.source()} {self.text} {right.source()})"

    def references(self) -> Iterator[str]:
        """The names of every ``$reference`` in the expression."""
        if self.kind == "ref":
            yield self.text
        for arg in self.args:
            yield from arg.references()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = list(self._tokenize(text))
        self.at = 0

    def _tokenize(self, text: str) -> Iterator[tuple[str, str]]:
        position = 0
        while position < len(text.rstrip()):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                rest = text[position:].strip()
                raise ExpressionError(f"'{text}' is not a size expression: cannot read '{rest}'")
            kind = match.lastgroup or "op"
            yield kind, match.group(kind)
            position = match.end()

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, *ops: str) -> str | None:
        token = self.peek()
        if token is not None and token[0] == "op" and token[1] in ops:
            self.at += 1
            return token[1]
        return None

    def expect(self, op: str) -> None:
        if self.take(op) is None:
            found = self.peek()
            where = f"'{found[1]}'" if found else "the end"
            raise ExpressionError(
                f"'{self.text}' is not a size expression: expected '{op}' at {where}"
            )

    def parse(self) -> Node:
        node = self.expr()
        token = self.peek()
        if token is not None:
            raise ExpressionError(
                f"'{self.text}' is not a size expression: unexpected '{token[1]}'"
            )
        return node

    def expr(self) -> Node:
        node = self.term()
        while (op := self.take("+", "-")) is not None:
            node = Node("op", op, (node, self.term()))
        return node

    def term(self) -> Node:
        node = self.unary()
        while (op := self.take("*", "//", "/", "%")) is not None:
            node = Node("op", op, (node, self.unary()))
        return node

    def unary(self) -> Node:
        if self.take("-") is not None:
            return Node("neg", "-", (self.unary(),))
        return self.atom()

    def atom(self) -> Node:
        token = self.peek()
        if token is None:
            raise ExpressionError(f"'{self.text}' is not a size expression: it ends too soon")
        kind, text = token
        if kind == "op" and text == "(":
            self.at += 1
            node = self.expr()
            self.expect(")")
            return node
        self.at += 1
        if kind == "number":
            return Node("number", text)
        if kind == "ref":
            return Node("ref", text)
        if kind == "name" and text in FUNCTIONS:
            self.expect("(")
            args = [self.expr()]
            while self.take(",") is not None:
                args.append(self.expr())
            self.expect(")")
            arity = FUNCTIONS[text][0]
            if (arity >= 0 and len(args) != arity) or not args:
                raise ExpressionError(
                    f"'{self.text}': {text} takes {arity if arity >= 0 else 'one or more'} "
                    f"arguments, not {len(args)}"
                )
            return Node("call", text, tuple(args))
        if kind == "name":
            known = ", ".join(FUNCTIONS)
            raise ExpressionError(
                f"'{self.text}': unknown function or bare name '{text}' (functions: {known}; "
                f"arguments are written with a $, as in ${text})"
            )
        raise ExpressionError(f"'{self.text}' is not a size expression: unexpected '{text}'")


def parse(text: str) -> Node:
    """The expression ``text`` as a tree; ``ExpressionError`` if it is not in the grammar."""
    return _Parser(text).parse()


def _evaluate(node: Node, bindings: Mapping[str, object], text: str) -> Fraction:
    if node.kind == "number":
        return Fraction(node.text)
    if node.kind == "ref":
        value = bindings.get(node.text)
        if isinstance(value, bool) or not isinstance(value, int | float):
            shown = "it is not bound" if node.text not in bindings else f"it is {value!r}"
            raise ExpressionError(f"'{text}': ${node.text} must be a number, but {shown}")
        return Fraction(value)
    args = [_evaluate(arg, bindings, text) for arg in node.args]
    if node.kind == "neg":
        return -args[0]
    if node.kind == "call":
        try:
            return FUNCTIONS[node.text][1](*args)
        except ValueError as exc:
            raise ExpressionError(f"'{text}': {exc}") from None
    left, right = args
    if node.text in ("/", "//", "%") and right == 0:
        shown = f"{_show(left)} {node.text} {_show(right)}"
        raise ExpressionError(f"'{text}' divides by zero: {node.source()} is {shown}")
    return _OPERATIONS[node.text](left, right)


def parts(node: Node, bindings: Mapping[str, object]) -> str:
    """The bound values of the expression's references: ``$planes = 16, $channels = 64``."""
    names = dict.fromkeys(node.references())
    return ", ".join(f"${name} = {bindings.get(name, '(unbound)')!r}" for name in names)


def evaluate(text: str, bindings: Mapping[str, object]) -> int:
    """The value of expression ``text`` with ``$name`` bound by ``bindings``: a non-negative
    integer, else ``ExpressionError`` showing the expression and its evaluated parts."""
    node = parse(text)
    try:
        value = _evaluate(node, bindings, text)
    except ExpressionError as exc:
        raise ExpressionError(f"{exc} (with {parts(node, bindings)})") from None
    if value.denominator != 1:
        raise ExpressionError(
            f"'{text}' is {_show(value)} with {parts(node, bindings)}, not a whole number; "
            "use // to divide whole numbers or make_divisible(x, d) to round"
        )
    if value < 0:
        raise ExpressionError(f"'{text}' is {_show(value)} with {parts(node, bindings)}: negative")
    return int(value)
