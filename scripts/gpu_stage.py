"""Pack what the bare GPU box lacks (SmolLM2's GGUF, the carried wheels) into two parts, one per device call.

The device tool carries at most 64 MiB per call, working tree included; the GGUF alone is 93.8 MiB. So:

    python scripts/gpu_stage.py pack --gguf FILE --wheels .whl --out .gpu-stage      # here
    python scripts/gpu_stage.py unpack --parts P1 P2 --sums .gpu-stage/SHA256SUMS \\
        --gguf-dir "$LABKIT_CACHE/downloads" --wheels-dir /tmp/labkit-gpu-wheels  # there, in the second call

The payload is a plain tar of the GGUF (gzip: 93.8 -> 88.4 MiB), the wheels (re-zipped uncompressed, then one xz
stream over all of them: 52 -> 28 MiB, as the files of one package compress together) and MANIFEST.json (the
sha256 of the GGUF and of every wheel). It is cut into two halves, part1 and part2. SHA256SUMS names
both parts' sha256; `unpack` checks them, the GGUF and every wheel. Standard library only: the box runs it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

MIB = 2**20
CALL_LIMIT = 64 * MIB  # what one device call may carry: working tree + carried paths
PARTS = ("part1", "part2")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_bytes(repo: Path) -> int:
    """Bytes of the working tree that travels with every call: tracked files and untracked files not ignored."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, check=True).stdout  # fmt: skip
    files = {repo / name.decode() for name in out.split(b"\0") if name}
    shared = repo / "shared"
    if shared.is_dir():  # travels whatever git says
        files |= {p for p in shared.rglob("*") if p.is_file()}
    return sum(p.stat().st_size for p in files if p.is_file() and not p.is_symlink())


def stored_wheel(wheel: Path) -> bytes:
    """The wheel re-zipped without compression (still a valid wheel: RECORD hashes the files, not the zip)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            info.compress_type = zipfile.ZIP_STORED
            zout.writestr(info, data)
    return buf.getvalue()


def xz(src: Path, dst: Path) -> None:
    if shutil.which("xz"):  # multi-threaded; Python's lzma reads its multi-block output
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            subprocess.run(["xz", "-6", "-T0", "-c"], stdin=fin, stdout=fout, check=True)
    else:
        with open(src, "rb") as fin, lzma.open(dst, "wb", preset=6) as fout:
            shutil.copyfileobj(fin, fout, MIB)


def pack(gguf: Path, wheels: list[Path], out: Path, room: int) -> dict:
    """Write out/part1, out/part2 and out/SHA256SUMS: the payload in two halves, each at most `room` bytes.

    Raises:
        SystemExit: the payload does not fit in two calls (the message names the largest wheels to drop).
    """
    names = [w.name.split("-")[0].lower().replace("_", "-") for w in wheels]
    if len(set(names)) != len(names):
        raise SystemExit(f"two wheels of one package in {sorted(n for n in names if names.count(n) > 1)}")
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"gguf": {"name": gguf.name, "sha256": sha256(gguf), "bytes": gguf.stat().st_size}, "wheels": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with open(gguf, "rb") as fin, gzip.open(tmp / (gguf.name + ".gz"), "wb", compresslevel=6) as fout:
            shutil.copyfileobj(fin, fout, MIB)
        with tarfile.open(tmp / "wheels.tar", "w") as tar:
            for wheel in wheels:
                data = stored_wheel(wheel)
                manifest["wheels"][wheel.name] = hashlib.sha256(data).hexdigest()
                info = tarfile.TarInfo(wheel.name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        xz(tmp / "wheels.tar", tmp / "wheels.tar.xz")
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
        payload = tmp / "payload.tar"
        with tarfile.open(payload, "w") as tar:
            for member in ("MANIFEST.json", gguf.name + ".gz", "wheels.tar.xz"):
                tar.add(tmp / member, arcname=member)
        size = payload.stat().st_size
        if (size + 1) // 2 > room - 4096:  # part2 travels with SHA256SUMS
            largest = sorted(wheels, key=lambda w: -w.stat().st_size)[:4]
            raise SystemExit(f"payload {size / MIB:.1f} MiB is {(size - 2 * room) / MIB:.1f} MiB over two calls of "
                             f"{room / MIB:.1f} MiB; drop wheels, largest first: "
                             + ", ".join(f"{w.name} ({w.stat().st_size / MIB:.1f} MiB)" for w in largest))
        split(payload, out, [f"{manifest['gguf']['sha256']}  {gguf.name}"])
        xz_bytes = (tmp / "wheels.tar.xz").stat().st_size
    return {"payload": size, "wheels_xz": xz_bytes, "part1": (out / "part1").stat().st_size,
            "part2": (out / "part2").stat().st_size, "gguf_sha256": manifest["gguf"]["sha256"]}


def split(payload: Path, out: Path, extra_sums: list[str]) -> None:
    """Cut the payload in two halves (each call keeps the same room for files added later): out/part1, out/part2,
    and out/SHA256SUMS with both parts' sha256 plus `extra_sums` lines."""
    sums = []
    with open(payload, "rb") as f:
        for part, chunk in zip(PARTS, (f.read((payload.stat().st_size + 1) // 2), f.read()), strict=True):
            (out / part).write_bytes(chunk)
            sums.append(f"{hashlib.sha256(chunk).hexdigest()}  {part}")
    (out / "SHA256SUMS").write_text("\n".join(sums + extra_sums) + "\n")


def read_sums(path: Path) -> dict[str, str]:
    return {name: digest for digest, name in (line.split() for line in path.read_text().splitlines() if line)}


def unpack(parts: list[Path], sums: Path, gguf_dir: Path, wheels_dir: Path) -> dict:
    """Check both parts, rebuild the payload and write the GGUF (checked) and the wheels (checked).

    Returns:
        {"gguf": path, "gguf_sha256": ..., "wheels": count}.
    Raises:
        SystemExit: a part or a file whose sha256 is not the recorded one (names which).
    """
    expected = read_sums(sums)
    for part in parts:
        if sha256(part) != expected[part.name]:
            raise SystemExit(f"{part}: sha256 differs from {sums}; stage it again (scripts/gpu_stage_weights.sh)")
    with tempfile.TemporaryDirectory() as tmp_name:
        payload = Path(tmp_name) / "payload.tar"
        with open(payload, "wb") as fout:
            for part in parts:
                with open(part, "rb") as fin:
                    shutil.copyfileobj(fin, fout, MIB)
        with tarfile.open(payload) as tar:
            manifest = json.load(tar.extractfile("MANIFEST.json"))
            gguf = gguf_dir / manifest["gguf"]["name"]
            gguf_dir.mkdir(parents=True, exist_ok=True)
            with gzip.open(tar.extractfile(gguf.name + ".gz")) as fin, open(gguf.with_suffix(".part"), "wb") as fout:
                shutil.copyfileobj(fin, fout, MIB)
            if sha256(gguf.with_suffix(".part")) != manifest["gguf"]["sha256"]:
                raise SystemExit(f"{gguf.name}: sha256 differs from the staged one")
            os.replace(gguf.with_suffix(".part"), gguf)  # a half-written GGUF is never "found"
            wheels_dir.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=lzma.open(tar.extractfile("wheels.tar.xz")), mode="r|") as wheels:
                for member in wheels:
                    data = wheels.extractfile(member).read()
                    if hashlib.sha256(data).hexdigest() != manifest["wheels"][member.name]:
                        raise SystemExit(f"{member.name}: sha256 differs from the staged one")
                    (wheels_dir / Path(member.name).name).write_bytes(data)
    return {"gguf": str(gguf), "gguf_sha256": manifest["gguf"]["sha256"], "wheels": len(manifest["wheels"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="GGUF + wheels -> part1, part2, SHA256SUMS")
    p.add_argument("--gguf", type=Path, required=True)
    p.add_argument("--wheels", type=Path, required=True, help="folder of the wheels to carry")
    p.add_argument("--out", type=Path, default=Path(".gpu-stage"))
    p.add_argument("--margin-mib", type=float, default=2.0, help="room kept free in each call for files added later")
    p = sub.add_parser("unpack", help="part1 + part2 -> the GGUF and the wheels, all checked")
    p.add_argument("--parts", type=Path, nargs=2, required=True)
    p.add_argument("--sums", type=Path, required=True)
    p.add_argument("--gguf-dir", type=Path, required=True)
    p.add_argument("--wheels-dir", type=Path, required=True)
    p = sub.add_parser("tree-bytes", help="bytes of the working tree each call carries")
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    if args.command == "tree-bytes":
        print(tree_bytes(repo))
    elif args.command == "pack":
        tree = tree_bytes(repo)
        room = CALL_LIMIT - tree - int(args.margin_mib * MIB)
        info = pack(args.gguf, sorted(args.wheels.glob("*.whl")), args.out, room)
        print(f"working tree {tree / MIB:.2f} MiB; room per call {room / MIB:.2f} MiB "
              f"(64 MiB - tree - {args.margin_mib} MiB margin)")
        print(f"payload {info['payload'] / MIB:.2f} MiB (wheels as one xz stream: {info['wheels_xz'] / MIB:.2f} MiB)"
              f" -> part1 {info['part1'] / MIB:.2f} MiB, part2 {info['part2'] / MIB:.2f} MiB; "
              f"GGUF sha256 {info['gguf_sha256']}")
        print(f"call 1 carries {(tree + info['part1']) / MIB:.2f} MiB, call 2 {(tree + info['part2']) / MIB:.2f} MiB "
              "(working tree included; the limit is 64 MiB)")
    else:
        print(json.dumps(unpack(list(args.parts), args.sums, args.gguf_dir, args.wheels_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
