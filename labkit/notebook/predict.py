"""Predict, then measure: a lab asks for a guess before a key measurement and sets it beside the result.

A lab's prediction cell holds one assignment the learner edits (`prediction = None  # your guess, in ×`), placed
before the measurement; the cell after the measurement calls `compare(...)`, which shows the guess, the theory's
value and the measurement side by side, says how far each is from the measurement, and stores the row where
`read_predictions` (and so the lab tests) find it. A guess left at None is reported as "no prediction", never as an
error: the notebook runs headless with every guess unset.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

PREDICTION_MIME = "application/vnd.labkit.prediction+json"


@dataclass(frozen=True)
class Comparison:
    """One prediction set beside its measurement.

    question: what was predicted. unit: of every value ("×", "ms", "GB"...). guess: the learner's value (None: none
    made). theory: what the lab's formula predicts (None: no formula). measured: the measurement. guess_off,
    theory_off: value ÷ measured (1.0 is exact; None when the value is missing or the measurement is 0).
    """

    question: str
    unit: str
    guess: float | None
    theory: float | None
    measured: float
    guess_off: float | None
    theory_off: float | None

    def line(self) -> str:
        """One sentence for the notebook."""
        def show(v):
            return f"{v:.3g} {self.unit}".strip()

        parts = [f"{self.question}: measured {show(self.measured)}"]
        if self.theory is not None:
            parts.append(f"theory {show(self.theory)} ({_off(self.theory_off)})")
        if self.guess is None:
            parts.append("you made no prediction (set it in the cell before the measurement and rerun both)")
        else:
            parts.append(f"you predicted {show(self.guess)} ({_off(self.guess_off)})")
        return "; ".join(parts)


def _off(ratio: float | None) -> str:
    if ratio is None:
        return "no ratio: the measurement is 0"
    if math.isclose(ratio, 1.0, rel_tol=0.05):
        return "within 5 % of the measurement"
    return f"{ratio:.2f}× the measurement"


def comparison(question: str, guess: float | None, measured: float, theory: float | None = None,
               unit: str = "") -> Comparison:  # fmt: skip
    """The comparison `compare` shows, without displaying it.

    Args:
        question: what was predicted, as the lab asks it. guess: the learner's number, or None.
        measured: the measurement (finite). theory: the formula's number, or None. unit: shown after each value.
    Returns:
        Comparison with each value's ratio to the measurement.
    Raises:
        ValueError: a measurement that is not a finite number, or a guess that is not a number.
    """
    if not isinstance(measured, int | float) or not math.isfinite(measured):
        raise ValueError(f"{question}: the measurement must be a finite number, got {measured!r}")
    if guess is not None and not isinstance(guess, int | float):
        raise ValueError(f"{question}: a prediction is a number (or None), got {guess!r}")

    def ratio(v):
        return None if v is None or measured == 0 else float(v) / float(measured)

    as_float = lambda v: None if v is None else float(v)  # noqa: E731
    return Comparison(question, unit, as_float(guess), as_float(theory), float(measured), ratio(guess), ratio(theory))


def compare(question: str, guess: float | None, measured: float, theory: float | None = None,
            unit: str = "") -> Comparison:  # fmt: skip
    """Show a prediction beside the theory and the measurement, and store it for the lab's tests.

    Args:
        question: what was predicted, as the lab asks it. guess: the learner's number, or None.
        measured: the measurement (finite). theory: the formula's number, or None. unit: shown after each value.
    Returns:
        Comparison with each value's ratio to the measurement (also displayed, and stored under PREDICTION_MIME).
    Raises:
        ValueError: a measurement that is not a finite number, or a guess that is not a number.
    """
    from IPython.display import display

    c = comparison(question, guess, measured, theory, unit)
    display({PREDICTION_MIME: asdict(c), "text/plain": c.line()}, raw=True)
    return c


def read_predictions(notebook) -> list[dict]:
    """Every comparison an executed notebook showed, in order (the fields of `Comparison`)."""
    return [output["data"][PREDICTION_MIME] for cell in notebook["cells"] for output in cell.get("outputs", [])
            if PREDICTION_MIME in output.get("data", {})]  # fmt: skip
