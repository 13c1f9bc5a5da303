"""The repository address is one setting: pyproject.toml's [project.urls] Repository. This writes it everywhere a
learner meets it — the README's badges and every lab's Colab / Binder badges and Colab install cell (.py and .ipynb).

    python scripts/set_repository.py                      # rewrite the files from the setting
    python scripts/set_repository.py you/your-fork        # change the setting (and the branch: --branch), then rewrite
    python scripts/set_repository.py --check              # exit 1 listing every file that disagrees with the setting
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
SETTING = re.compile(r'^(Repository = "https://github\.com/)([\w.-]+/[\w.-]+)(")', re.M)
SLUG = r"[\w.-]+/[\w.-]+"
# every form the address takes in the README and the labs: (pattern, its replacement for slug, branch, name)
FORMS = [
    (re.compile(rf"colab\.research\.google\.com/github/{SLUG}/blob/[\w.-]+/"),
     lambda m, slug, branch, name: f"colab.research.google.com/github/{slug}/blob/{branch}/"),
    (re.compile(rf"mybinder\.org/v2/gh/{SLUG}/[\w.-]+\?"),
     lambda m, slug, branch, name: f"mybinder.org/v2/gh/{slug}/{branch}?"),
    (re.compile(rf"git clone -q --depth 1 https://github\.com/{SLUG} /content/[\w.-]+"),
     lambda m, slug, branch, name: f"git clone -q --depth 1 https://github.com/{slug} /content/{name}"),
    # the install (its constraints file too) and sys.path lines; in the .ipynb the closing quote is escaped (\")
    (re.compile(r"/content/[\w.-]+(\[|\\|\"|'|/)"), lambda m, slug, branch, name: f"/content/{name}{m.group(1)}"),
]


def setting() -> tuple[str, str]:
    """(owner/name, branch) from pyproject.toml ([project.urls] Repository; [tool.labkit] branch, default main)."""
    data = tomllib.loads(PYPROJECT.read_text())
    url = data["project"]["urls"]["Repository"]
    branch = data.get("tool", {}).get("labkit", {}).get("branch", "main")
    return url.removeprefix("https://github.com/").strip("/"), branch


def targets() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "labs").glob("[0-9][0-9]_*.py")),
            *sorted((ROOT / "labs").glob("[0-9][0-9]_*.ipynb"))]


def rewritten(text: str, slug: str, branch: str) -> str:
    """`text` with every form of the address pointing at `slug` on `branch`."""
    name = slug.split("/")[1]
    for pattern, replace in FORMS:
        text = pattern.sub(lambda m, replace=replace: replace(m, slug, branch, name), text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("slug", nargs="?", help="owner/name on GitHub (default: keep the setting)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file disagrees")
    args = p.parse_args(argv)
    if args.slug:
        if not re.fullmatch(SLUG, args.slug):
            p.error(f"expected owner/name, got {args.slug!r}")
        PYPROJECT.write_text(SETTING.sub(rf"\g<1>{args.slug}\g<3>", PYPROJECT.read_text()))
    slug, branch = setting()
    stale = []
    for path in targets():
        text = path.read_text()
        new = rewritten(text, slug, branch)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new)
    verb = "disagree with" if args.check else "rewritten for"
    print(f"{len(stale)} file(s) {verb} {slug}@{branch}" + "".join(f"\n  {s}" for s in stale))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
