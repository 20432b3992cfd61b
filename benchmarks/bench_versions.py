"""``featx extract`` of two versions of featx, side by side in one run: does a change slow it down?

Figures measured on different days are not comparable on a shared VM (the same code's throughput
can differ by 2x between days), so a regression check runs both versions now, on the same images,
taking turns (round-robin), and reports the best of the repeats. The other version is checked out
from git (``git worktree add --detach``) into a temporary folder and imported from there with the
same interpreter, torch and settings; the time is the ``seconds`` of each run's ``summary.json``.

The images and the command are those of ``bench_extract.py``'s ``featx`` variant: 96 crops of
the scikit-image samples at 256x256, the default taps (``relu1_1,relu2_1,relu3_1``, TTSR's), random
weights, batch 8, 2 workers.

Usage:
    python benchmarks/bench_versions.py --old 8aee9c7      # this checkout against 8aee9c7
    python benchmarks/bench_versions.py --old HEAD~3 --images 8 --size 64 --repeats 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import make_images  # noqa: E402
from common import format_table, machine_info, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "versions.json"


def importable(tree: Path, where: Path) -> Path:
    """A folder that makes ``tree``'s ``featx`` and ``featx_cli`` (its ``cli/``) importable."""
    where.mkdir(parents=True)
    (where / "featx").symlink_to(tree / "featx")
    (where / "featx_cli").symlink_to(tree / "cli")
    return where


def run_once(path: Path, images: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(path)}
    command = [sys.executable, "-m", "featx_cli.main", "extract", str(images), str(out), "--weights", "random", "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=path)
    if done.returncode != 0:
        raise RuntimeError(f"featx extract with {path} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return float(json.loads((out / "summary.json").read_text())["seconds"])


def measure(old: str, *, images: int = 96, size: int = 256, repeats: int = 3) -> dict[str, Any]:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", old], capture_output=True, text=True, check=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    with tempfile.TemporaryDirectory(prefix="featx-versions-") as tmp:
        root = Path(tmp)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(root / "old"), commit.stdout.strip()],
                       check=True)  # fmt: skip
        try:
            paths = {"old": importable(root / "old", root / "old-path"), "new": importable(ROOT, root / "new-path")}
            make_images(root / "images", images, size)
            seconds: dict[str, list[float]] = {"old": [], "new": []}
            for _ in range(repeats):
                for name, path in paths.items():
                    seconds[name].append(run_once(path, root / "images", root / "out"))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(root / "old")], check=False)
    best = {name: min(values) for name, values in seconds.items()}
    return {
        "benchmark": "versions",
        "machine": machine_info(),
        "config": {"old": old, "old_commit": commit.stdout.strip(), "new_commit": head.stdout.strip(),
                   "new_tree": "this checkout (with uncommitted changes)", "images": images, "size": size,
                   "repeats": repeats},  # fmt: skip
        "seconds": seconds,
        "best_seconds": best,
        "new_over_old_throughput": round(best["old"] / best["new"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", required=True, help="the git revision to compare with (a commit, tag or HEAD~N)")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    payload = measure(args.old, images=args.images, size=args.size, repeats=args.repeats)
    rows = [[name, *values, payload["best_seconds"][name]] for name, values in payload["seconds"].items()]
    headers = ["version", *(f"run {i + 1} s" for i in range(args.repeats)), "best s"]
    print(format_table(headers, rows))
    print(f"throughput of this checkout / {args.old}: {payload['new_over_old_throughput']:.3f}")
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
