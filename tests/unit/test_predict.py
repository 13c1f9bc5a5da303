"""Predict-then-measure rows: ratios to the measurement, a missing guess reported not raised, bad input refused,
and the rows read back from a notebook's outputs."""

import math

import pytest

from labkit.notebook import predict


def test_ratios_are_each_value_over_the_measurement():
    c = predict.comparison("int8 speed-up", guess=3, measured=2.0, theory=2.1, unit="×")
    assert c.guess_off == 1.5 and math.isclose(c.theory_off, 1.05)
    line = c.line()
    assert "measured 2 ×" in line and "theory 2.1 × (within 5 % of the measurement)" in line
    assert "you predicted 3 × (1.50× the measurement)" in line


def test_no_guess_and_no_theory_are_said_not_raised():
    c = predict.comparison("TTFT", guess=None, measured=0.04, unit="s")
    assert c.guess_off is None and c.theory_off is None and "you made no prediction" in c.line()
    assert "theory" not in c.line()
    zero = predict.comparison("idle share", guess=0.2, measured=0.0)
    assert zero.guess_off is None and "no ratio" in zero.line()


@pytest.mark.parametrize("measured", [float("nan"), float("inf"), "3", None])
def test_a_measurement_must_be_a_finite_number(measured):
    with pytest.raises(ValueError, match="finite number"):
        predict.comparison("q", 1.0, measured)


def test_a_guess_must_be_a_number():
    with pytest.raises(ValueError, match="a prediction is a number"):
        predict.comparison("q", "fast", 1.0)


def test_rows_are_read_back_from_the_outputs_in_order():
    rows = [predict.comparison(q, None, m).__dict__ for q, m in (("a", 1.0), ("b", 2.0))]
    nb = {"cells": [{"outputs": [{"data": {predict.PREDICTION_MIME: rows[0]}}]},
                    {"outputs": [{"data": {"text/plain": "x"}}, {"data": {predict.PREDICTION_MIME: rows[1]}}]}]}
    assert [r["question"] for r in predict.read_predictions(nb)] == ["a", "b"]
