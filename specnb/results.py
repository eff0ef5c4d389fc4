"""Results as tidy CSV: append rows atomically (write a temporary file, then rename) and resume a
sweep after an interruption without losing or duplicating rows; ``runs_by_machine`` sets the
latest run of each machine side by side (a reader's run beside the committed one)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from .atomic import write_csv
from .paths import DATA, results_dir

__all__ = ["result_path", "read_results", "append_rows", "write_atomic", "pending", "runs_by_machine"]


def result_path(name: str) -> Path:
    """data/results/NAME.csv in the full profile, .specnb-quick/results/NAME.csv in the quick one."""
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"result name must be a plain file stem like 'draft_size'; got {name!r}")
    return results_dir() / (name if name.endswith(".csv") else f"{name}.csv")


def read_results(path: str | Path) -> pd.DataFrame:
    """The rows saved so far (an empty frame if the file does not exist yet)."""
    path = Path(path)
    return pd.read_csv(path) if path.exists() and path.stat().st_size > 0 else pd.DataFrame()


def write_atomic(frame: pd.DataFrame, path: str | Path) -> None:
    """Write ``frame`` to ``path`` so a reader never sees a half-written file."""
    write_csv(frame, path)


def append_rows(path: str | Path, rows: Iterable[Mapping] | pd.DataFrame, key: list[str] | None = None) -> pd.DataFrame:
    """Append ``rows`` to the CSV at ``path`` atomically; with ``key``, a row whose key columns
    match an existing row replaces it (re-running a finished configuration never duplicates it).
    Returns the whole table."""
    new = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    old = read_results(path)
    if key:
        missing = [c for c in key if c not in new.columns]
        if missing:
            raise ValueError(f"rows lack the key columns {missing}; add them or change key")
    table = pd.concat([old, new], ignore_index=True) if len(old) else new.reset_index(drop=True)
    if key and len(table):
        table = table.drop_duplicates(subset=key, keep="last").reset_index(drop=True)
    write_atomic(table, path)
    return table


def pending(configs: Iterable[Mapping], path: str | Path, key: list[str]) -> list[Mapping]:
    """The configs whose ``key`` values have no row in ``path`` yet: what a resumed sweep must run."""
    done = read_results(path)
    if done.empty or not set(key) <= set(done.columns):
        return list(configs)
    seen = {tuple(str(v) for v in row) for row in done[key].itertuples(index=False)}
    return [c for c in configs if tuple(str(c[k]) for k in key) not in seen]


def runs_by_machine(name: str, key: str, values: Sequence[str]) -> pd.DataFrame:
    """The latest run of every machine that wrote result ``name``, side by side: one row per ``key``
    value, one column per (machine, value); a machine is (``env_cpu``, ``env_cpu_isa``) and a run
    its latest ``env_time``. Reads this profile's file and the committed one (data/results), so a
    reader's run stands beside the committed run; the newest run comes first."""
    paths = dict.fromkeys([result_path(name), DATA / "results" / f"{name}.csv"])
    frame = pd.concat([read_results(p) for p in paths], ignore_index=True)
    needed = [key, *values, "env_cpu", "env_time"]
    if frame.empty or not set(needed) <= set(frame.columns):
        raise ValueError(f"{name}.csv has no rows with columns {needed}; run the cell that writes it first")
    frame = frame.drop_duplicates()
    frame["env_cpu_isa"] = frame["env_cpu_isa"].fillna("") if "env_cpu_isa" in frame else ""
    latest = frame.groupby(["env_cpu", "env_cpu_isa"])["env_time"].transform("max")
    frame = frame[frame["env_time"] == latest].sort_values("env_time", ascending=False, kind="stable")
    frame["machine"] = (frame["env_cpu"] + " " + frame["env_cpu_isa"]).str.strip() + " · " + frame["env_time"].str.slice(0, 16)
    machines, keys = list(dict.fromkeys(frame["machine"])), list(dict.fromkeys(frame[key]))
    table = frame.drop_duplicates(["machine", key], keep="last").pivot(index=key, columns="machine", values=list(values))
    return table.swaplevel(axis=1).reindex(index=keys, columns=pd.MultiIndex.from_product([machines, list(values)]))
