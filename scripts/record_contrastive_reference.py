"""Records transformers 4.55.4's contrastive search (its last built-in implementation,
`GenerationMixin._contrastive_search`) on this machine's cached weights into the reference that
tests/unit/test_decoding_twins.py compares labkit's from-scratch `decoding.contrastive_search` with.

transformers 5 dropped contrastive search, so this runs in its own venv, never the lab's:

    python3.11 -m venv /tmp/v455 && /tmp/v455/bin/pip install torch==2.13.0 transformers==4.55.4
    /tmp/v455/bin/python scripts/record_contrastive_reference.py tiny-bloom-shakespeare [smollm2-135m]

Each model's cases (prompt ids, k, alpha, stop ids) are the ones already in the file; their outputs are recorded
again, as one set per weights fingerprint. Why per fingerprint: `labkit prepare` trains tiny-bloom-shakespeare on the
machine, and another CPU kind (AVX-512 vs AVX2 kernels) rounds differently, so its trained weights, and their
outputs, differ; SmolLM2's weights are the GGUF's, dequantized, the same on every machine.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import torch
import transformers
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # labkit.cache only (stdlib): this venv's transformers 4.55 cannot run the rest of labkit
from labkit.cache import cache_root  # noqa: E402

REFERENCE = ROOT / "tests/unit/decoding_reference/contrastive_transformers_4.55.4.json"
ROPE_THETA = {"smollm2-135m": 100000.0}  # 4.55 does not read the 5.x config's rope_parameters


def weights_sha256(folder: Path) -> str:
    """sha256 over every tensor of folder/model.safetensors, by name in sorted order (dtype, shape and bytes), so
    the file's metadata does not matter (a transformers upgrade that writes another header keeps the fingerprint).
    tests/unit/test_decoding_twins.py loads this function from this file."""
    digest = hashlib.sha256()
    with safe_open(folder / "model.safetensors", "pt") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def record(name: str, cases: list[dict]) -> dict:
    folder = cache_root() / "models" / name
    extra = {"rope_theta": ROPE_THETA[name]} if name in ROPE_THETA else {}
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, **extra).eval()
    out = []
    for c in cases:
        ids = torch.tensor([c["prompt_ids"]])
        stop = {"eos_token_id": c["eos_token_id"], "pad_token_id": 1} if "eos_token_id" in c else {}
        with torch.no_grad():
            new = model.generate(ids, attention_mask=torch.ones_like(ids), penalty_alpha=c["alpha"], top_k=c["k"],
                                 max_new_tokens=c["max_new_tokens"], do_sample=False, **stop)[0, ids.shape[1]:]
        out.append({**{k: v for k, v in c.items() if k != "new_ids"}, "new_ids": new.tolist()})
    return {"model": name, "weights_sha256": weights_sha256(folder), "recorded_on": cpu_name(), "cases": out}


def dump(reference: dict) -> str:
    """The reference as JSON with one case per line (a diff shows which case changed)."""
    sets = ",\n".join(
        "  {" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in s.items() if k != "cases")
        + ', "cases": [\n' + ",\n".join("   " + json.dumps(c) for c in s["cases"]) + "]}"
        for s in reference["sets"])
    head = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in reference.items() if k != "sets")
    return "{\n" + head + ',\n "sets": [\n' + sets + "\n ]\n}\n"


def main(names: list[str]) -> int:
    if transformers.__version__ != "4.55.4":
        print(f"needs transformers 4.55.4, this Python has {transformers.__version__}: see this file's top")
        return 2
    reference = json.loads(REFERENCE.read_text())
    for name in names:
        known = [s for s in reference["sets"] if s["model"] == name]
        if not known:
            print(f"no cases for {name!r} in {REFERENCE.name}; models there: "
                  f"{sorted({s['model'] for s in reference['sets']})}")
            return 2
        new = record(name, known[0]["cases"])
        same = [s for s in known if s["weights_sha256"] == new["weights_sha256"]]
        if same and same[0]["cases"] != new["cases"]:
            print(f"{name}: the same weights gave other tokens than recorded on {same[0]['recorded_on']}")
            return 1
        print(f"{name}: weights {new['weights_sha256'][:12]} {'already recorded' if same else 'recorded'}")
        if not same:
            reference["sets"].append(new)
    REFERENCE.write_text(dump(reference))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["tiny-bloom-shakespeare"]))
