"""benchmarks/serving.py end to end on a tiny model (no vLLM), and its labkit-vs-peer target on known rows."""

import json
import runpy

import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")

BENCH = runpy.run_path("benchmarks/serving.py")  # its functions, without running main()


def test_no_peer_run_writes_json_plot_and_says_why_the_peer_was_skipped(tmp_path, capsys):
    out = tmp_path / "serving.json"
    assert BENCH["main"](["--model", "tiny-llama", "--no-peer", "--schedulers", "continuous", "--clients", "1", "2",
                          "--requests-per-client", "1", "--max-tokens", "3", "--rates", "20", "--open-requests", "2",
                          "--threads", "1", "--one-client-rounds", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["peer"] == {"skipped": "--no-peer"} and report["complete"] and report["chat"]
    rows = pd.DataFrame(report["rows"])
    assert list(zip(rows["mode"], rows.clients.fillna(0), rows.rate.fillna(0), strict=True)) == [
        ("closed", 1, 0), ("closed", 2, 0), ("open", 0, 20.0)]
    assert (rows.succeeded == rows.sent).all() and all(t == {"usage": n} for t, n in zip(rows.tokens_from, rows.sent,
                                                                                          strict=True))
    # labkit's server ran as its own process (as vLLM does); its /metrics gave the decode batch: one client, one
    # sequence per decode step
    assert report["labkit_servers"] == "each in its own process" and rows.mean_decode_batch.iloc[0] == 1.0
    assert "plotly" in out.with_suffix(".html").read_text()[:20000].lower()
    assert "peer: --no-peer" in capsys.readouterr().out
    one = report["targets"]["one_client_vs_fastest_exact_decode"]  # server, engine alone, GenAI: side by side
    assert one["rounds"] == 1 and one["met"] == (one["vs_fastest"] >= 0.9)
    served = pd.DataFrame(report["one_client_rows"]).set_index("path").tokens
    assert served["server"] == served["engine alone"]  # the same requests got the same replies


def test_unknown_scheduler_is_refused_naming_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        BENCH["main"](["--schedulers", "fastest", "--no-peer"])
    assert "choose from" in capsys.readouterr().err


def _row(server, engine, clients, tok_s, ttft):
    return {"server": server, "engine": engine, "mode": "closed", "clients": clients, "rate": None,
            "tokens_per_s": tok_s, "ttft_p50_s": ttft, "wall_s": 1.0}


def test_peer_target_takes_labkits_best_scheduler_at_each_level():
    df = pd.DataFrame([_row("vLLM", "vLLM", 1, 20.0, 0.2), _row("a", "labkit", 1, 10.0, 0.1),
                       _row("b", "labkit", 1, 25.0, 0.3), _row("vLLM", "vLLM", 16, 90.0, 2.0),
                       _row("a", "labkit", 16, 100.0, 1.5), _row("b", "labkit", 16, 80.0, 1.0)])
    levels = BENCH["_targets"](df, "vLLM", 16)["labkit_over_peer"]["levels"]
    assert levels[1]["best_scheduler"] == "b" and levels[1]["tokens_per_s_ratio"] == 25.0 / 20.0
    assert not levels[1]["met"]  # faster, but a later first token than vLLM's
    assert levels[16]["best_scheduler"] == "a" and levels[16]["met"]
    table = BENCH["_table"](df, "vLLM")
    assert table.loc[table.server == "b", "x vLLM"].tolist() == [25.0 / 20.0, 80.0 / 90.0]
