"""paths, results, plotting, timing, the notebook runner, the CLI and packaging."""

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

import specnb.paths as paths
from specnb.generate import GenerationResult, autoregressive_generate, cache_argument, speculative_generate
from specnb.plotting import save_fig, set_style
from specnb.stack import installed_problems, read_lock, stack_problems
from specnb.results import append_rows, pending, read_results, result_path, write_atomic
from specnb.timing import (PooledResult, benchmark_op, compare, environment, forward_share, over_prompts, step_latency,
                           summarize)

from conftest import prompts as make_prompts

ROOT = Path(paths.__file__).resolve().parent.parent


# ---------------------------------------------------------------- paths and profiles
def test_paths_resolve_from_package_not_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.ROOT == ROOT and paths.DATA == ROOT / "data" and paths.FIGURES == ROOT / "figures"


def test_profiles_write_to_separate_places(monkeypatch):
    monkeypatch.setenv("SPECNB_PROFILE", "quick")
    assert paths.profile() == "quick" and paths.by_profile(quick=1, full=2) == 1
    assert paths.results_dir() == ROOT / ".specnb-quick" / "results"
    assert paths.figures_dir() == ROOT / ".specnb-quick" / "figures"
    monkeypatch.setenv("SPECNB_PROFILE", "full")
    assert paths.by_profile(quick=1, full=2) == 2
    assert paths.results_dir() == ROOT / "data" / "results" and paths.figures_dir() == ROOT / "figures"
    monkeypatch.setenv("SPECNB_PROFILE", "fast")
    with pytest.raises(ValueError, match="quick"):
        paths.profile()


def test_quick_outputs_are_git_ignored():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".specnb-quick/results/x.csv"], cwd=ROOT)
    assert ignored.returncode == 0


# ---------------------------------------------------------------- results
def test_append_rows_atomic_and_resumable(tmp_path):
    path = tmp_path / "sweep.csv"
    configs = [{"draft": d, "k": k} for d in ("a", "b") for k in (1, 2)]
    assert pending(configs, path, ["draft", "k"]) == configs
    append_rows(path, [{**configs[0], "tps": 1.0}, {**configs[1], "tps": 2.0}], key=["draft", "k"])
    todo = pending(configs, path, ["draft", "k"])
    assert todo == configs[2:]
    # re-running a finished config replaces its row instead of duplicating it
    table = append_rows(path, [{**configs[1], "tps": 3.0}], key=["draft", "k"])
    assert len(table) == 2 and table.loc[table.k == 2, "tps"].item() == 3.0
    assert len(read_results(path)) == 2
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    with pytest.raises(ValueError, match="key columns"):
        append_rows(path, [{"draft": "c"}], key=["draft", "k"])


def test_failed_write_leaves_old_file(tmp_path):
    path = tmp_path / "r.csv"
    write_atomic(pd.DataFrame({"a": [1]}), path)

    class Boom(pd.DataFrame):
        def to_csv(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(Boom({"a": [2]}), path)
    assert read_results(path)["a"].tolist() == [1]
    assert os.listdir(tmp_path) == ["r.csv"]


def test_result_path_is_profiled_and_checked():
    assert result_path("x").parent == paths.results_dir()
    with pytest.raises(ValueError):
        result_path("../escape")


# ---------------------------------------------------------------- plotting
def test_save_fig_writes_png_and_svg_and_closes(tmp_path):
    set_style()
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    out = save_fig(fig, "demo", directory=tmp_path)
    assert sorted(p.name for p in out) == ["demo.png", "demo.svg"]
    assert all(p.stat().st_size > 0 for p in out)
    assert not plt.fignum_exists(fig.number)
    with pytest.raises(ValueError):
        save_fig(plt.figure(), "a/b", directory=tmp_path)
    plt.close("all")


# ---------------------------------------------------------------- timing (no timed assertions)
def _fake(method, calls):
    def run():
        calls.append(method)
        return GenerationResult(sequences=torch.arange(6)[None], prompt_length=2, method=method, target_calls=4,
                                seconds=1.0 + len(calls) / 100, ttft_seconds=0.1)
    return run


def test_compare_interleaves_and_rotates():
    calls = []
    runs = compare({"a": _fake("a", calls), "b": _fake("b", calls), "c": _fake("c", calls)}, repeats=5, warmup=1, progress=False)
    assert calls[:3] == ["a", "b", "c"]  # warm-up round
    assert calls[3:12] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert len(runs) == 15 and set(runs.columns) >= {"method", "repeat", "tokens_per_second", "ttft_seconds"}
    with pytest.raises(ValueError, match="repeats"):
        compare({"a": _fake("a", [])}, repeats=3)


def test_summarize_pairs_ratios_by_repeat():
    runs = pd.DataFrame({"method": ["a", "b"] * 5, "repeat": [r for r in range(5) for _ in "ab"],
                         "tokens_per_second": [10, 20, 5, 10, 8, 16, 100, 200, 1, 2]})
    table = summarize(runs, baseline="a").set_index("method")
    assert table.loc["b", "ratio_vs_a"] == 2.0 and table.loc["a", "ratio_vs_a"] == 1.0
    assert table.loc["b", "tokens_per_second_median"] == 16
    with pytest.raises(ValueError, match="baseline"):
        summarize(runs, baseline="z")


def test_benchmark_op_and_environment():
    m = benchmark_op(lambda: torch.ones(8) + 1, label="add", min_run_time=0.01)
    assert m["median_s"] > 0 and m["runs"] >= 1
    env = environment("cpu")
    assert env["env_device"] == "cpu" and env["env_torch"] == torch.__version__ and env["env_torch_threads"] >= 1


def test_step_latency_keeps_context_fixed():
    from specnb.models import tiny_model

    m = tiny_model("llama", layers=1, hidden=32)
    calls = []
    name = cache_argument(type(m))  # "cache" (transformers >= 5.24) or "past_key_values"
    h = m.register_forward_pre_hook(lambda mod, args, kw: calls.append(kw[name].get_seq_length()), with_kwargs=True)
    out = step_latency(m, context=7, tokens=3, min_run_time=0.01)
    h.remove()
    assert out["median_s"] > 0 and out["context"] == 7 and out["tokens"] == 3
    assert calls[0] == 0 and set(calls[1:]) == {7}  # prefill once, then every step sees 7 cached tokens
    with pytest.raises(ValueError):
        step_latency(m, context=0)


def test_forward_share_attributes_time():
    from specnb.generate import speculative_generate
    from specnb.models import tiny_model

    t, d = tiny_model("llama", layers=2), tiny_model("llama", layers=1, seed=3)
    share = forward_share(lambda: speculative_generate(t, d, torch.tensor([[4, 5]]), 12, k=3), {"target": t, "draft": d})
    assert share["target_forward_s"] > 0 and share["draft_forward_s"] > 0
    assert share["outside_s"] == pytest.approx(share["total_s"] - share["target_forward_s"] - share["draft_forward_s"])
    assert 0 <= share["outside_share"] < 1


# ---------------------------------------------------------------- CLI and notebook runner
@pytest.mark.slow
def test_cli_bench_on_tiny_models(tmp_path):
    env = dict(os.environ, SPECNB_PROFILE="quick", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "specnb", "bench", "--target", "tiny:llama:layers=2:hidden=32", "--draft", "copy:noise=0.1",
           "--k", "3", "--max-new-tokens", "12", "--repeats", "5", "--output", "cli_test"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ratio_vs_autoregressive" in out.stdout
    saved = read_results(tmp_path / "quick" / "results" / "cli_test.csv")  # SPECNB_QUICK_DIR (conftest)
    assert set(saved["method"]) == {"autoregressive", "speculative", "assisted"} and {"env_cpu", "env_cpu_isa"} <= set(saved)
    bad = subprocess.run([sys.executable, "-m", "specnb", "generate", "--k", "0"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "k (draft tokens per iteration) must be" in bad.stderr


def test_notebook_runner_saves_in_place_in_full_and_aside_in_quick(tmp_path, monkeypatch):
    import nbformat

    from specnb.notebooks import find_notebooks, run_notebook

    bar = "import sys\nfor i in range(3):\n    print(f'\\rstep {i}', end='', file=sys.stderr, flush=True)\nprint(file=sys.stderr)"
    cleared = "from tqdm import tqdm\nfor i in tqdm(range(3), leave=False):\n    pass\nprint('done')"  # a bar that erases itself
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os\nprint(os.getcwd())"), nbformat.v4.new_code_cell(bar),
                                         nbformat.v4.new_code_cell(cleared)])
    path = tmp_path / "00_demo.ipynb"
    nbformat.write(nb, path)
    assert find_notebooks([tmp_path]) == [path]
    run_notebook(path, timeout=120)  # quick (conftest): the source notebook stays as it was
    assert nbformat.read(path, as_version=4).cells[0].execution_count is None
    assert nbformat.read(tmp_path / "quick" / "notebooks" / path.name, as_version=4).cells[0].execution_count == 1
    monkeypatch.setenv("SPECNB_PROFILE", "full")
    run_notebook(path, timeout=120)
    done = nbformat.read(path, as_version=4)
    assert done.cells[0].execution_count == 1
    assert done.cells[0].outputs[0]["text"].strip() == str(tmp_path)  # runs in the notebook's folder
    assert [o["text"] for o in done.cells[1].outputs] == ["step 2\n"]  # a progress bar is stored as its last state
    assert [(o["name"], o["text"]) for o in done.cells[2].outputs] == [("stdout", "done\n")]  # no blank stderr left


# ---------------------------------------------------------------- packaging
def test_lock_pyproject_and_environment_yml_agree():
    assert stack_problems(ROOT) == []
    lock = read_lock(ROOT / "requirements.lock")
    assert lock["torch"] == "2.13.0" and lock["transformers"] == "5.23.0"  # the stack the notebooks ran on
    assert not any(name.startswith("nvidia-") for name in lock)  # the CPU build's dependency set


def test_stack_problems_name_each_disagreement(tmp_path):
    for name in ("pyproject.toml", "requirements.in", "requirements.lock", "environment.yml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    lock = (tmp_path / "requirements.lock").read_text()
    (tmp_path / "requirements.lock").write_text(lock.replace("transformers==5.23.0", "transformers==4.57.6")
                                                .replace("\nseaborn==", "\nnot-seaborn=="))
    (tmp_path / "environment.yml").write_text((ROOT / "environment.yml").read_text().replace("  - pip\n", "  - pip\n  - numpy\n"))
    problems = "\n".join(stack_problems(tmp_path))
    assert "transformers==4.57.6, outside pyproject.toml's <6,>=5.0" in problems
    assert "requirements.in asks transformers==5.23.0" in problems
    assert "seaborn is a dependency in pyproject.toml but not in requirements.lock" in problems
    assert "installs ['numpy'] from conda" in problems
    (tmp_path / "installed.lock").write_text(f"torch=={torch.__version__}\npytest==0.0.1\nnot-a-package==1.0\n")
    assert installed_problems(tmp_path / "installed.lock") == [
        "not-a-package is locked at 1.0 but not installed", f"pytest is locked at 0.0.1 but {pytest.__version__} is installed"]
    (tmp_path / "requirements.lock").write_text("torch>=2.4\n")
    with pytest.raises(ValueError, match="not pinned with ==.*make lock"):
        read_lock(tmp_path / "requirements.lock")


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make reproduce" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_pooled_result_counts_only_tokens_out_after_the_ttft_mark():
    """Decode tokens/s pools tokens emitted after each call's TTFT mark over the time after it: an assisted
    call whose first target forward already emitted 4 tokens contributes 2 of its 6, not 5."""
    plain = GenerationResult(sequences=torch.arange(10)[None], prompt_length=4, method="speculative", k=3, seconds=2.0, ttft_seconds=0.5)
    assisted = GenerationResult(sequences=torch.arange(10)[None], prompt_length=4, method="assisted", k=3, seconds=2.0, ttft_seconds=0.5,
                                ttft_tokens=4)
    row = PooledResult([plain, assisted], "pooled").summary()
    assert row["new_tokens"] == 12 and row["tokens_per_second"] == pytest.approx((5 + 2) / 3.0)


def test_over_prompts_decodes_every_prompt_per_call_and_pools(pairs):
    target, drafts = pairs["llama"]
    seen = []
    ps = make_prompts(3)

    def spec(p):
        seen.append(p.shape[1])
        return speculative_generate(target, drafts["perturbed"], p, 6, k=2)

    methods = over_prompts({"target": lambda p: autoregressive_generate(target, p, 6), "spec": spec}, ps, k=2)
    runs = compare(methods, repeats=5, warmup=0, progress=False).set_index(["method", "repeat"])
    assert seen == [p.shape[1] for p in ps] * 5  # every prompt, in order, once per timed call
    assert (runs["new_tokens"] == 18).all()  # 3 prompts x 6 tokens pooled into one row
    singles = [speculative_generate(target, drafts["perturbed"], p, 6, k=2) for p in ps]  # greedy: deterministic
    assert (runs.loc["spec", "target_calls"] == sum(r.target_calls for r in singles)).all()
    assert (runs.loc["spec", "k"] == 2).all()
    with pytest.raises(ValueError, match="at least one prompt"):
        over_prompts({"target": spec}, [])


def test_step_latencies_rotates_models_and_takes_medians_over_rounds(monkeypatch):
    import specnb.timing as timing

    calls, fake = [], {"a": [3.0, 1.0, 2.0, 9.0, 2.0], "b": [5.0] * 5, "c": [1.0, 1.0, 4.0, 1.0, 1.0]}

    def step(model, *, context, tokens, min_run_time, seed):
        calls.append(model)
        return {"median_s": fake[model][seed]}

    monkeypatch.setattr(timing, "step_latency", step)
    table = timing.step_latencies({"a": "a", "b": "b", "c": "c"}, context=8, rounds=5, progress=False).set_index("model")
    assert calls[:9] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # rotated each round
    assert list(table.index) == ["a", "b", "c"]
    assert table.loc["a", "median_s"] == 2.0 and table.loc["a", "min_s"] == 1.0 and table.loc["a", "max_s"] == 9.0
    assert table.loc["c", "median_s"] == 1.0 and (table["rounds"] == 5).all()
    with pytest.raises(ValueError, match="rounds"):
        timing.step_latencies({"a": "a"}, context=8, rounds=0)


# ---------------------------------------------------------------- layout
def _import_graph() -> dict[str, set[str]]:
    """specnb module -> the specnb modules it imports, at module level or inside functions."""
    import ast

    files = {}
    for f in (ROOT / "specnb").rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for mod, f in files.items():
        package = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                name = ".".join(base + ([node.module] if node.module else []))
                deps |= {n for n in [name] + [f"{name}.{a.name}" for a in node.names] if n in files}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in files}
        graph[mod] = deps - {mod}
    return graph


def test_no_import_cycles_and_no_long_modules():
    graph = _import_graph()
    assert "specnb.generate.loops" in graph and "specnb.generate.steps" in graph["specnb.generate.loops"]

    def reaches(start, goal, seen):
        return any(d == goal or (d not in seen and not seen.add(d) and reaches(d, goal, seen)) for d in graph[start])

    cycles = sorted(m for m in graph if reaches(m, m, set()))
    assert cycles == [], f"modules on an import cycle: {cycles}"
    long = {str(f.relative_to(ROOT)): n for f in (ROOT / "specnb").rglob("*.py") if (n := len(f.read_text().splitlines())) > 500}
    assert long == {}, f"modules over 500 lines: {long}"


def test_cli_generate_decodes_text_and_takes_prompt_lookup(capsys):
    from specnb.cli import main
    from specnb.plotting import trace_text

    assert trace_text(["a", "b", "c", "d"], ["target", "draft", "correction", "bonus"]).startswith("<a>b[c]{d}\n")
    assert main(["generate", "--target", "tiny:llama:layers=2:hidden=32", "--draft", "prompt-lookup",
                 "--prompt-ids", "3,4,5,3,4,5,3", "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "new token ids:" in out and "method: prompt-lookup" in out and "draft_calls: 0" in out
    stock = out.split("new token ids:")[1].splitlines()[0]
    # --packed: the same model on oneDNN-prepacked weights, the same tokens
    assert main(["generate", "--target", "tiny:llama:layers=2:hidden=32", "--draft", "copy:noise=0.3", "--packed",
                 "--prompt-ids", "3,4,5,3,4,5,3", "--max-new-tokens", "8"]) == 0
    assert main(["generate", "--target", "tiny:llama:layers=2:hidden=32", "--draft", "prompt-lookup", "--packed",
                 "--prompt-ids", "3,4,5,3,4,5,3", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.split("new token ids:")[2].splitlines()[0] == stock
    # a zoo name is a local model and its tokenizer (no hub look-up); the output is text with the trace's marks
    assert main(["generate", "--target", "zoo/target", "--draft", "zoo/d1", "--prompt", "def fibonacci(n):",
                 "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert "accepted draft tokens plain" in out and "new token ids" not in out and "new_tokens: 12" in out
    with pytest.raises(SystemExit, match="needs a draft model"):
        main(["generate", "--target", "tiny:llama:layers=2:hidden=32", "--draft", "prompt-lookup", "--method", "assisted",
              "--prompt-ids", "3,4,5", "--max-new-tokens", "4"])
    # prompt-lookup takes a rule: max=, min=, pick=; the rule changes the proposals, never the tokens
    ids = ["--prompt-ids", "1,2,7,8,5,1,2,9,5,1,2", "--max-new-tokens", "10", "--k", "2"]
    assert main(["generate", "--target", "tiny:llama:layers=2:hidden=32", "--draft", "prompt-lookup", *ids]) == 0
    hf_rule = capsys.readouterr().out
    assert main(["generate", "--target", "tiny:llama:layers=2:hidden=32", "--draft", "prompt-lookup:max=8:min=2:pick=last", *ids]) == 0
    rule = capsys.readouterr().out
    tokens = lambda out: out.split("new token ids:")[1].splitlines()[0]  # noqa: E731
    assert tokens(rule) == tokens(hf_rule) and "method: prompt-lookup" in rule
    from specnb.cli import _lookup

    assert repr(_lookup("prompt-lookup:max=8:min=2:pick=last")) == "PromptLookupDraft(max_ngram=8, min_ngram=2, pick='last')"
    assert repr(_lookup("prompt-lookup")) == "PromptLookupDraft(max_ngram=2, min_ngram=1, pick='first')"
    for bad, message in (("prompt-lookup:max=8:pick=newest", "pick must be one of"), ("prompt-lookup:ngram=3", "takes max=, min= and pick="),
                         ("prompt-lookup:max=2:min=3", "min_ngram must be"), ("prompt-lookup:8", "key=value")):
        with pytest.raises(SystemExit, match=message):
            main(["generate", "--target", "tiny:llama:layers=2:hidden=32", "--draft", bad, *ids])


def test_runs_by_machine_sets_each_machines_latest_run_side_by_side(tmp_path, monkeypatch):
    from specnb import results

    monkeypatch.setattr(results, "DATA", tmp_path / "committed")
    monkeypatch.setattr(results, "results_dir", lambda: tmp_path / "mine")
    rows = lambda cpu, isa, t, v: [{"claim": c, "verdict": v, "env_cpu": cpu, "env_cpu_isa": isa, "env_time": t} for c in ("a", "b")]
    results.append_rows(tmp_path / "committed" / "results" / "x.csv", rows("EPYC", "AVX512", "2026-11-01T00:00", "held")
                        + rows("EPYC", "AVX512", "2026-11-02T00:00", "not held") + rows("Xeon", "AVX2", "2026-10-01T00:00", "old"))
    results.append_rows(tmp_path / "mine" / "x.csv", rows("Xeon", "AVX2", "2026-12-01T00:00", "inconclusive"))
    table = results.runs_by_machine("x", "claim", ["verdict"])
    assert list(table.index) == ["a", "b"]
    assert [m for m, _ in table.columns] == ["Xeon AVX2 · 2026-12-01T00:00", "EPYC AVX512 · 2026-11-02T00:00"]
    assert (table.iloc[:, 0] == "inconclusive").all() and (table.iloc[:, 1] == "not held").all()
    with pytest.raises(ValueError, match="run the cell"):
        results.runs_by_machine("missing", "claim", ["verdict"])
