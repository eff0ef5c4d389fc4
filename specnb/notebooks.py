"""Execute the workbook's notebooks top to bottom (Restart & Run All) and save them.

``python -m specnb.notebooks run [DIR_OR_FILES ...] [--timeout S]`` runs each numbered notebook in
order with nbclient, in its own folder, in the active profile (``SPECNB_PROFILE``), and writes it
atomically only if every cell succeeded: back in place in the full profile, to
``.specnb-quick/notebooks/`` in the quick one (``paths.executed_notebook``). Stream outputs are
coalesced (a progress bar is kept as its last state) and dropped when blank (a bar that cleared
itself: ``tqdm(leave=False)``), so a saved notebook's stderr holds only what a reader should see.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from .atomic import atomic_path
from .paths import NOTEBOOKS, executed_notebook, profile

__all__ = ["find_notebooks", "run_notebook", "drop_blank_streams", "main"]


def drop_blank_streams(nb) -> int:
    """Remove the stream outputs of ``nb`` whose text is only whitespace (e.g. a cleared progress
    bar's ``"    \\r"``); returns how many were removed."""
    removed = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            keep = [o for o in cell.outputs if not (o.output_type == "stream" and not o.text.strip())]
            removed += len(cell.outputs) - len(keep)
            cell.outputs = keep
    return removed


def find_notebooks(targets: list[str | Path] | None = None) -> list[Path]:
    """Notebook paths in run order (sorted by name, so 00_, 01_, ... run first)."""
    targets = targets or [NOTEBOOKS]
    found: list[Path] = []
    for t in map(Path, targets):
        if t.is_dir():
            found.extend(sorted(p for p in t.glob("*.ipynb") if not p.name.startswith(".")))
        elif t.suffix == ".ipynb" and t.exists():
            found.append(t)
        else:
            raise ValueError(f"{t} is neither a notebook nor a folder of notebooks")
    return found


def run_notebook(path: str | Path, timeout: int = 1800, kernel_name: str = "python3") -> float:
    """Execute ``path`` from a fresh kernel and save it with its outputs (``paths.executed_notebook``:
    in place in full, the quick folder in quick). Returns seconds."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    # coalesce_streams: a cell's stream outputs merged, progress-bar redraws (\r) reduced to their last state
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, coalesce_streams=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell; the file is left untouched
    drop_blank_streams(nb)
    with atomic_path(executed_notebook(path)) as tmp:
        nbformat.write(nb, str(tmp))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specnb.notebooks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks in place")
    run.add_argument("targets", nargs="*", help="notebooks or folders (default: notebooks/)")
    run.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    notebooks = find_notebooks(args.targets)
    if not notebooks:
        print("no notebooks to run")
        return 0
    print(f"profile: {profile()}")
    total = 0.0
    for nb in notebooks:
        print(f"running {nb.name} ...", flush=True)
        seconds = run_notebook(nb, timeout=args.timeout)
        total += seconds
        print(f"  done in {seconds:.0f} s: {executed_notebook(nb)}", flush=True)
    print(f"{len(notebooks)} notebooks in {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
