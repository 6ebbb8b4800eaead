"""calculator: arithmetic for the model, evaluated by walking the parsed expression, never `eval`.

Only numbers, + - * / // % **, unary signs, a few math functions and pi/e are understood; any
other syntax (names, attributes, subscripts, lambdas, strings...) is refused before it runs.
Python integers are unbounded, so `9**9**9` would run for minutes: a power is refused before it
is computed when its result would pass `MAX_BITS`, and every result is checked against it too.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from shared.services.tools.base import Param, ToolContext, ToolError, function_spec, parse_arguments

MAX_EXPRESSION_CHARS = 500
MAX_BITS = 4_000  # about 1,200 decimal digits; a bigger integer is refused

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
# name: (function, fewest arguments, most arguments; None for any number)
_FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "abs": (abs, 1, 1),
    "round": (round, 1, 2),
    "min": (min, 2, None),
    "max": (max, 2, None),
    "sqrt": (math.sqrt, 1, 1),
    "log": (math.log, 1, 2),
    "exp": (math.exp, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

PARAMS = (
    Param(
        "expression",
        str,
        "An arithmetic expression, e.g. `2 * (3 + 4) ** 2 / sqrt(16)`. Operators: + - * / // % **; "
        f"functions: {', '.join(_FUNCTIONS)}; constants: pi, e.",
        minimum=1,
        maximum=MAX_EXPRESSION_CHARS,
    ),
)


class CalculatorTool:
    name = "calculator"

    def spec(self) -> dict[str, Any]:
        return function_spec(
            self.name, "Evaluate an arithmetic expression exactly and return the number.", PARAMS
        )

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> str:
        return calculate(parse_arguments(arguments, PARAMS)["expression"])


def calculate(expression: str) -> str:
    """The value of `expression` as text; ToolError for anything but plain arithmetic."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"The expression is longer than {MAX_EXPRESSION_CHARS} characters.")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError):  # ValueError: a NUL character in the source
        raise ToolError("That is not a valid arithmetic expression.") from None
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise ToolError("Division by zero.") from None
    except OverflowError:
        raise ToolError("The result is too large.") from None
    except (ValueError, TypeError):  # math domain errors: sqrt(-1), log(0)
        raise ToolError("A function got a value outside its domain (e.g. sqrt(-1) or log(0)).") from None
    except RecursionError:
        raise ToolError("The expression is nested too deeply.") from None
    return repr(_checked(value))


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        # bool is an int to Python; True + True is not arithmetic the model meant.
        if isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return node.value
        raise ToolError(f"Only numbers are allowed, not {type(node.value).__name__} {node.value!r}.")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ToolError(f"Unknown name '{node.id}'. Constants: {', '.join(_CONSTANTS)}.")
    if isinstance(node, ast.Call):
        return _call(node)
    raise ToolError(f"'{_describe(node)}' is not allowed; only arithmetic is.")


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        name = node.func.id if isinstance(node.func, ast.Name) else _describe(node.func)
        raise ToolError(f"Unknown function '{name}'. Functions: {', '.join(_FUNCTIONS)}.")
    function, fewest, most = _FUNCTIONS[node.func.id]
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise ToolError(f"{node.func.id}() takes plain positional arguments only.")
    if len(node.args) < fewest or (most is not None and len(node.args) > most):
        if most is None:
            expected = f"at least {fewest}"
        else:
            expected = str(fewest) if fewest == most else f"{fewest} or {most}"
        raise ToolError(f"{node.func.id}() takes {expected} argument(s), not {len(node.args)}.")
    args = [_eval(a) for a in node.args]
    if node.func.id == "round" and len(args) == 2 and not isinstance(args[1], int):
        raise ToolError("round()'s second argument must be an integer.")
    return _checked(function(*args))


def _check_power(base: Number, exponent: Number) -> None:
    """Refuse an integer power whose result would pass MAX_BITS, before computing it."""
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and exponent * (abs(base).bit_length() - 1) > MAX_BITS
    ):
        raise ToolError(f"That power is too large to compute (over {MAX_BITS} bits).")


def _checked(value: Any) -> Number:
    if isinstance(value, complex):  # (-8) ** 0.5
        raise ToolError("The result is not a real number.")
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise ToolError("The result is too large.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("The result is too large (or not a number).")
    return value


def _describe(node: ast.AST) -> str:
    return ast.unparse(node)[:60]
