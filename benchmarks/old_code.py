"""The package as it was at an earlier commit, importable beside the current one, so that a benchmark times
the old code against the new in the same run, each in a fresh Python process under the same conditions.

    with old_package(BEFORE_SPEEDUP) as old:
        old_seconds = timed_run(old, "from cmr_clip.synthetic import make_cohort", "make_cohort(...)")
        new_seconds = timed_run(None, "from cmr_clip.synthetic import make_cohort", "make_cohort(...)")

The old tree comes from `git archive` of this repository and is laid out as `setup.cfg`'s `package_dir`
installs it (`modeling/` as `cmr_clip.modeling`, ...).
"""

from __future__ import annotations

import configparser
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# main before synthesis and prepare were made faster; tests/data/output_digests.json was recorded with it.
BEFORE_SPEEDUP = "3a97b66"


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=True).stdout


def _package_dirs(rev: str) -> dict[str, str]:
    """`setup.cfg`'s package_dir at `rev`: package name -> folder."""
    config = configparser.ConfigParser()
    config.read_string(_git("show", f"{rev}:setup.cfg").decode())
    lines = config["options"]["package_dir"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines if "=" in line)


@contextmanager
def old_package(rev: str):
    """A temporary folder holding the `cmr_clip` package of commit `rev` (yields the folder to put on sys.path)."""
    folders = _package_dirs(rev)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=io.BytesIO(_git("archive", rev, *sorted(set(folders.values()))))) as archive:
            archive.extractall(Path(tmp) / "tree", filter="data")
        for package, folder in sorted(folders.items()):  # parents before sub-packages
            shutil.copytree(Path(tmp) / "tree" / folder, Path(tmp) / "site" / package.replace(".", "/"),
                            dirs_exist_ok=True)
        yield Path(tmp) / "site"


def timed_run(package_root: Path | None, setup: str, statement: str) -> dict:
    """Wall and CPU seconds (this process and its children) of `statement`, run after `setup` in a fresh Python
    whose `cmr_clip` is the one under `package_root` (None: the installed one)."""
    code = textwrap.dedent(f"""
        import json, resource, sys, time
        root = {str(package_root) if package_root else None!r}
        if root:
            sys.path.insert(0, root)
        import cmr_clip
        assert root is None or cmr_clip.__file__.startswith(root), cmr_clip.__file__
        {setup}
        def cpu():
            own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
        start, start_cpu = time.perf_counter(), cpu()
        {statement}
        print(json.dumps({{"seconds": time.perf_counter() - start, "cpu": cpu() - start_cpu}}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if result.returncode != 0:
        raise RuntimeError(f"the timed run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_comparison(times: dict, n: int, title: str) -> None:
    """The old and new rows (wall seconds, CPU seconds per study) and the new/old speed ratios."""
    print(title)
    print(f"{'code':<10} {'seconds':>9} {'cpu s/study':>13}")
    for name, row in times.items():
        print(f"{name:<10} {row['seconds']:>9.1f} {row['cpu'] / n:>13.2f}")
    old, new = times["old"], times["new"]
    print(f"new/old speed: wall {old['seconds'] / new['seconds']:.2f}x, cpu {old['cpu'] / new['cpu']:.2f}x")
