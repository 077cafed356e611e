"""Money conversion: the one place cents become dollars.

Every money column in the warehouse is converted here, so a wrong divisor (a public demo once
divided by 1000) can only be wrong once, and is caught by tests/macros/test_money.py.
"""

from __future__ import annotations

from sqlglot import exp
from sqlmesh import macro
from sqlmesh.core.macros import MacroEvaluator


@macro()
def cents_to_dollars(evaluator: MacroEvaluator, cents: exp.Expression, scale: int | exp.Expression = 2) -> exp.Expression:
    """Integer cents -> DECIMAL(16, scale) dollars, without integer division on any engine.

    The numerator is cast to a decimal before dividing, so PostgreSQL's integer division
    (``7 / 100 = 0``) cannot happen; the result is rounded, then cast to the output type.

    Usage in a model: ``@cents_to_dollars(raw.subtotal) AS subtotal``.
    """
    digits = int(scale.this) if isinstance(scale, exp.Literal) else int(scale)  # type: ignore[arg-type]
    numerator = exp.cast(cents, exp.DataType.build("DECIMAL(18, 4)"))
    divided = exp.Div(this=numerator, expression=exp.Literal.number(100))
    return exp.cast(
        exp.func("ROUND", divided, exp.Literal.number(digits)),
        exp.DataType.build(f"DECIMAL(16, {digits})"),
    )
