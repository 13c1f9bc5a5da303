"""Build a notebook (no outputs) from a percent-format source: "# %% [markdown]", "# %%", "# %% tags=[...]".

    python scripts/nb_from_percent.py lab.py labs/NN_name.ipynb

Labs are written as percent files while drafting (diffs are readable), then committed as .ipynb.
"""

import json
import re
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def build(src: str, dst: str) -> None:
    parts = re.split(r"^# %%(.*)$", open(src).read(), flags=re.M)
    nb = new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}  # fmt: skip
    for header, body in zip(parts[1::2], parts[2::2], strict=True):
        body = body.strip("\n")
        if "[markdown]" in header:
            lines = body.splitlines()
            text = [ln[2:] if ln.startswith("# ") else ln[1:] if ln.startswith("#") else ln for ln in lines]
            cell = new_markdown_cell("\n".join(text))
        else:
            cell = new_code_cell(body)
            tags = re.search(r"tags=(\[.*?\])", header)
            if tags:
                cell.metadata["tags"] = json.loads(tags.group(1))
        nb.cells.append(cell)
    for cell in nb.cells:
        cell.pop("id", None)
    nb.nbformat_minor = 4  # no cell ids: stable diffs
    nbformat.write(nb, dst)


if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2])
