"""Numbers typed into a lab's prose are either structure (section numbers, years, citations, the setup the lab
chooses) or justified one by one below; a measured or published number belongs in a cell's output.

Why: a number typed into markdown goes stale the moment a library, a machine or a source changes; a cell that
prints it from a measurement or from `labkit.models.specs` cannot.

What counts as structure (stripped before counting): headings; inline code and math (formulas and parameters);
links and URLs; references to labs and sections; years and citations ("et al. 2022", "SC'22", arXiv ids); list
markers; the exercise sections (questions set their own parameters); hardware set-ups ("8×A100", "2 ranks",
"batch 32", "2 threads", "a 2-core machine"); the loopback address. Every other digit must appear in `JUSTIFIED`
with the reason it may stay typed, and every entry there must still match a line (no stale justifications).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted((ROOT / "labs").glob("[0-9][0-9]_*.py"))

STRUCTURE = [
    r"`[^`]*`", r"\$\$?[^$]*\$\$?", r"\]\([^)]*\)", r"https?://\S+", r"<[^>]+>",
    r"\b[Ll]abs?\s+\d{2}(?:\s*(?:[–-]|and|,|or)\s*\d{2})*(?:\s*§\s*\d+)?",
    r"\b(?:[Ss]ections?|§)\s*\d+(?:\s*(?:[–-]|and)\s*\d+)?",
    r"\bet al\.,?\s*(?:\([^)]*\)|[^.;)]*?\b(?:19|20)\d{2}\b)", r"\b(?:19|20)\d{2}\b", r"\b[A-Z]{2,}\s?'\d{2}\b",
    r"arXiv[: ]\d{4}\.\d{4,5}", r"127\.0\.0\.1", r"^\s*(?:\d+\.|[-*])\s", r"^\s*\|\s*\d{2}\s*\|",
    r"\d+\s*×\s*[A-Z]\w*",  # 8×A100: a hardware set-up
    r"\b\d+[ -](?:ranks?|GPUs?|threads?|cores?|core|rank|GPU|processes)\b",
    r"\b(?:batch(?: size)?|bs|rank|GPU|device|layer|stage|step|version|v|top-k =|top-p =|opset)\s*\d+\b",
]
NUMBER = re.compile(r"(?<![\w.\-/])\d[\d,.]*")

# lab -> [(text on the line, why it may stay typed)]
JUSTIFIED: dict[str, list[tuple[str, str]]] = {
    "04": [("is 2× — small operators", "the ideal speed-up on the 2 threads the lab sets: a bound, not a result")],
    "06": [
        ("T < 1 sharpens", "the temperature that leaves logits unchanged: a definition"),
        ("min(1, p(x)/q(x))", "the acceptance rule of speculative sampling (Leviathan et al. 2023, Algorithm 1)"),
        ("max(0, p − q)", "the same rule's residual distribution"),
        ("(1 − α^(γ+1)) / ((1 − α)(γc + 1))", "the expected speed-up formula (Leviathan et al. 2023, Theorem 3.8)"),
    ],
    "09": [
        ("**2 per layer in the forward**", "Megatron's count (Shoeybi et al. 2019), measured in section 3"),
        ("2 all-reduces per layer, but", "Megatron's count again, measured in section 3"),
        ("× 4 bytes (fp32 here)", "the size of an fp32 value: a definition"),
        ("Rank 0 holds layers 0–1", "the split the lab chooses for its 2 ranks"),
        ("up to 4 micro-batches", "the micro-batch counts the lab sweeps (its set-up)"),
        ("1024×1024 matmuls", "the shape of the demonstration layers the lab builds"),
        ("(p − 1) of (m + p − 1)", "the bubble formula (GPipe, Huang et al. 2019)"),
        ("greedy generation of 100 tokens", "the benchmark's ms/token definition (specs.BLOOM_BENCHMARK_NEW_TOKENS)"),
        ("(batch × 100)", "the same definition"),
        ("a PCIe link (16–32 GB/s)", "widget settings to try (PCIe 4.0 / 5.0 x16, one direction)"),
        ("each read 1/8 of the weights", "what 8-way tensor parallelism means"),
    ],
    "13": [
        ("16-bit weights", "a precision's name"),
        ("KV cache = 2 × layers", "the KV formula (anatomy.kv_cache_bytes): one K and one V"),
        ("holds 1/N of the weights", "what ZeRO-3 sharding means"),
        ("code (0.7.3, the version", "a software version, the one the published benchmark's README requires"),
        ("over 2 gloo ranks", "the set-up the lab launches"),
        ("0 keeps the type's", "the widget's convention for 'default'"),
    ],
}


def markdown_lines(path: Path) -> list[str]:
    """The markdown lines of a percent-format notebook, outside headings and exercise sections."""
    lines, in_md, in_exercises = [], False, False
    for raw in path.read_text().splitlines():
        if raw.startswith("# %%"):
            in_md = "[markdown]" in raw
            continue
        if not in_md:
            continue
        text = raw[2:] if raw.startswith("# ") else raw.lstrip("#")
        if text.lstrip().startswith("#"):  # a heading: section numbers and titles
            in_exercises = "exercise" in text.lower()
            continue
        if not in_exercises:
            lines.append(text)
    return lines


def typed_numbers(path: Path) -> list[tuple[str, str]]:
    """(number, line) for every digit run left after the structure is stripped."""
    found = []
    for line in markdown_lines(path):
        stripped = line
        for pattern in STRUCTURE:
            stripped = re.sub(pattern, " ", stripped)
        found += [(m.group(), line.strip()) for m in NUMBER.finditer(stripped)]
    return found


def test_every_typed_number_is_structure_or_justified():
    unjustified, used = [], set()
    for path in LABS:
        lab = path.name[:2]
        for number, line in typed_numbers(path):
            hits = [text for text, _why in JUSTIFIED.get(lab, []) if text in line]
            used.update((lab, t) for t in hits)
            if not hits:
                unjustified.append(f"lab {lab}: {number!r} in {line!r}")
    assert not unjustified, ("numbers typed into prose (print them from a cell, or justify them in JUSTIFIED):\n"
                             + "\n".join(unjustified))
    stale = [(lab, text) for lab, entries in JUSTIFIED.items() for text, _ in entries if (lab, text) not in used]
    assert not stale, f"justifications that match no typed number any more: {stale}"


def test_the_scanner_finds_a_typed_measurement():
    """The rule itself: a measured number typed into prose is caught; structure is not."""
    sample = Path(__file__).with_name("_prose_sample.py")
    sample.write_text("# %% [markdown]\n# ## 3. Section\n# Decoding runs at 46.3 tokens/s (lab 07, section 2, "
                      "Pope et al. 2022) at batch 8 on 8×A100.\n")
    try:
        assert [n for n, _ in typed_numbers(sample)] == ["46.3"]
    finally:
        sample.unlink()
