"""How long each lab takes, as its last recorded runs measured it, smoke and full.

`labs/durations.json` (committed) holds, per mode ("smoke", "full") and lab number, the seconds of the run that
measured it, the machine and the date. Runs write what they measured to `reports/lab_durations.json` (not in git):
`labkit run-labs` for its mode, and `make test` for the smoke runs of its papermill tests. Then

    python -m labkit.notebook.durations --record        # reports/lab_durations.json -> labs/durations.json

keeps the committed table in step. Each lab's setup cell prints `describe(its number)`.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Mapping
from pathlib import Path

from labkit.notebook.run import LABS_DIR

TABLE = LABS_DIR / "durations.json"
MEASURED = LABS_DIR.parent / "reports" / "lab_durations.json"
MODES = ("smoke", "full")


def record(seconds: Mapping[str, float], mode: str, machine: str, path: Path = MEASURED,
           date: str | None = None) -> dict:  # fmt: skip
    """Merge measured lab times into a durations file (created when missing).

    Args:
        seconds: {lab file stem or number: seconds}, e.g. {"01_lifecycle_training_vs_inference": 62.1}.
        mode: "smoke" or "full". machine: where they ran (`hardware.detect().summary`).
        path: the file to update. date: ISO date of the runs (default: today).
    Returns:
        the whole table after the merge: {mode: {lab number: {"seconds", "machine", "date"}}}.
    Raises:
        ValueError: an unknown mode (naming the valid ones).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    table = json.loads(path.read_text()) if path.exists() else {}
    day = date or datetime.date.today().isoformat()
    for lab, s in seconds.items():
        table.setdefault(mode, {})[lab[:2]] = {"seconds": round(float(s), 1), "machine": machine, "date": day}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return table


def describe(lab: str, path: Path = TABLE) -> str:
    """One line for a lab's setup cell: its recorded smoke and full run times, with where and when they ran.

    Args:
        lab: the lab's number, e.g. "07". path: the durations file (default: labs/durations.json).
    Returns:
        e.g. "Lab 07 takes about 30 s with smoke parameters (…, 2026-11-30); its full run: not recorded yet".
    """
    table = json.loads(path.read_text()) if path.exists() else {}
    parts = []
    for mode in MODES:
        run = table.get(mode, {}).get(lab)
        what = "with smoke parameters" if mode == "smoke" else "with the full parameters below"
        parts.append(f"about {_minutes(run['seconds'])} {what} ({run['machine']}, {run['date']})" if run else
                     f"{what}: not recorded yet")  # fmt: skip
    return f"Lab {lab} takes " + "; ".join(parts) + "."


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help=f"copy {MEASURED.name} into {TABLE.name}")
    args = parser.parse_args(argv)
    if not MEASURED.exists():
        print(f"nothing measured yet: {MEASURED} does not exist (run `make test` or `labkit run-labs`)")
        return 1
    measured = json.loads(MEASURED.read_text())
    if args.record:
        for mode, labs in measured.items():
            for lab, run in labs.items():
                record({lab: run["seconds"]}, mode, run["machine"], TABLE, run["date"])
        print(f"recorded {sum(len(v) for v in measured.values())} lab times into {TABLE}")
    for lab in sorted({lab for labs in measured.values() for lab in labs}):
        print(describe(lab, TABLE if args.record else MEASURED))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
