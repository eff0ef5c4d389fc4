"""specnb.timeseries: the ETT loader, the patch transformer and speculative forecasting."""

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import specnb.timeseries as ts
from specnb.models import count_parameters
import specnb.timeseries.data as ts_data  # the module whose globals locate_ett reads

TINY = ts.TSConfig(patch=8, d_model=16, n_heads=2, d_ff=32, n_layers=2, max_patches=16)
REAL_DATA = [Path(p) for p in (os.environ.get(ts.DATA_ENV, ""), ts.SHARED_DATA) if p]
REAL = next((p for p in REAL_DATA if (p / "ETTh1.csv").is_file()), None)


def tiny(seed: int, cfg: ts.TSConfig = TINY) -> ts.PatchTransformer:
    torch.manual_seed(seed)
    return ts.PatchTransformer(cfg).eval()


def series(batch: int = 6, points: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(points, dtype=torch.float32)
    return torch.sin(t / 3 + torch.rand(batch, 1, generator=g) * 6) * 2 + torch.randn(batch, points, generator=g) * 0.3


# ---------------------------------------------------------------- loader
@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No environment folder, no shared folder, an empty cache: only what the test provides."""
    monkeypatch.delenv(ts.DATA_ENV, raising=False)
    monkeypatch.setattr(ts_data, "SHARED_DATA", tmp_path / "shared")
    monkeypatch.setattr(ts_data, "CACHE_DIR", tmp_path / "cache")
    return tmp_path


def write_csv(folder: Path, rows: int = 20 * 30 * 24) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dates = pd.date_range("2016-07-01", periods=rows, freq="h")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"date": dates, **{c: rng.normal(size=rows) for c in ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]}})
    path = folder / "ETTh1.csv"
    frame.to_csv(path, index=False)
    return path


def test_loader_verifies_checksum_of_local_file(isolated, monkeypatch):
    path = write_csv(isolated / "local")
    with pytest.raises(ValueError, match="sha256"):
        ts.locate_ett("ETTh1", isolated / "local")
    monkeypatch.setitem(ts.ETT_FILES, "ETTh1", hashlib.sha256(path.read_bytes()).hexdigest())
    assert ts.locate_ett("ETTh1", isolated / "local") == path
    monkeypatch.setenv(ts.DATA_ENV, str(isolated / "local"))
    assert ts.locate_ett("ETTh1") == path and len(ts.load_ett("ETTh1")) == 20 * 30 * 24


def test_missing_file_without_network_names_the_variable(isolated, monkeypatch):
    def offline(url, dest, timeout=30.0):
        raise OSError("network is unreachable")

    monkeypatch.setattr(ts_data, "fetch_url", offline)
    with pytest.raises(FileNotFoundError, match=ts.DATA_ENV):
        ts.locate_ett("ETTh1", isolated / "nowhere")


def test_download_is_verified(isolated, monkeypatch):
    src = write_csv(isolated / "remote")
    monkeypatch.setattr(ts_data, "fetch_url", lambda url, dest, timeout=30.0: dest.parent.mkdir(parents=True, exist_ok=True) or dest.write_bytes(src.read_bytes()))
    with pytest.raises(ValueError, match="sha256"):
        ts.locate_ett("ETTh1")
    monkeypatch.setitem(ts.ETT_FILES, "ETTh1", hashlib.sha256(src.read_bytes()).hexdigest())
    assert ts.locate_ett("ETTh1") == ts_data.CACHE_DIR / "ETTh1.csv"


def test_unknown_dataset_is_a_value_error():
    with pytest.raises(ValueError, match="ETTh1"):
        ts.locate_ett("ETTm9")


def test_split_sizes_and_train_scaling_on_synthetic(isolated, monkeypatch):
    path = write_csv(isolated / "local", rows=17420)
    frame = pd.read_csv(path, parse_dates=["date"])
    split = ts.split_ett(frame, context=672)
    assert split["train"].shape == (8640, 7) and split["val"].shape == (2880 + 672, 7) and split["test"].shape == (2880 + 672, 7)
    np.testing.assert_allclose(split["train"].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(split["train"].std(0), 1, atol=1e-4)
    with pytest.raises(ValueError, match="rows"):
        ts.split_ett(frame.iloc[:1000])


@pytest.mark.skipif(REAL is None, reason="ETTh1.csv not available (set SPECNB_TS_DATA)")
def test_real_etth1_checksum_and_split():
    frame = ts.load_ett("ETTh1", REAL)
    assert len(frame) == 17420 and list(frame.columns) == ["date", "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    split = ts.split_ett(frame)
    assert [len(split[k]) for k in ("train", "val", "test")] == [8640, 2880 + 672, 2880 + 672]
    # the test split starts context rows before the val/test boundary (Informer's border1s)
    raw = frame.drop(columns="date").to_numpy()
    np.testing.assert_allclose(split["test"][672] * split["std"] + split["mean"], raw[11520], rtol=1e-5)


def test_windows_are_channel_independent():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)  # rows, channels
    w = ts.make_windows(x, 4, stride=3)
    assert w.shape == (3 * 2, 4)
    assert w[0].tolist() == [0, 2, 4, 6] and w[1].tolist() == [1, 3, 5, 7] and w[2].tolist() == [6, 8, 10, 12]


# ---------------------------------------------------------------- model
def test_shapes_and_scaled_configs():
    m = tiny(0)
    assert m(torch.randn(3, 5, 8)).shape == (3, 5, 8)
    for scale, d in [(0.7, 180), (0.5, 128), (0.25, 64), (0.01, 4)]:
        cfg = ts.scaled_config(scale)
        assert cfg.d_model == d and cfg.d_model % cfg.n_heads == 0
    with pytest.raises(ValueError, match="patches"):
        m(torch.randn(1, 17, 8))
    with pytest.raises(ValueError, match="even"):
        ts.TSConfig(d_model=18, n_heads=2)


def test_causality_future_patch_never_changes_earlier_prediction():
    m = tiny(0)
    x = torch.randn(4, 10, 8)
    base = ts.score(m, x)
    for t in range(10):
        y = x.clone()
        y[:, t:] = torch.randn(4, 10 - t, 8) * 100
        out = ts.score(m, y)
        assert torch.equal(out[:, :t], base[:, :t])  # bitwise
        if t < 9:
            assert not torch.equal(out[:, t], base[:, t])


# ---------------------------------------------------------------- speculative forecasting
@pytest.mark.parametrize("horizon", [8, 20, 40])
def test_tolerance_zero_reproduces_target_only(horizon):
    """Full-buffer decoding: bitwise (every forward has the same shape). KV-cached decoding feeds
    1 patch (target-only) or k + 1 patches (verify), so it matches to float rounding."""
    target, draft = tiny(0), tiny(1)
    ctx = series(points=32)
    for cache in (False, True):
        ref = ts.target_forecast(target, ctx, horizon, cache=cache)
        assert ref.values.shape == (6, horizon) and ref.target_calls == math.ceil(horizon / 8)
        same = torch.equal if not cache else lambda a, b: torch.allclose(a, b, atol=1e-5, rtol=0)
        for k in (1, 3):
            out = ts.speculative_forecast(target, draft, ctx, horizon, k=k, rule="tolerance", tol=0.0, cache=cache)
            assert same(out.values, ref.values)
            assert out.accepted == 0
            out = ts.speculative_forecast(target, draft, ctx, horizon, k=k, rule="gaussian", sigma=0.0, cache=cache)
            assert same(out.values, ref.values)


def test_cached_forward_matches_full_forward_at_per_row_slots():
    m = tiny(0)
    x = torch.randn(3, 9, 8)
    full = ts.score(m, x)
    kv = ts.new_cache(m, 3, 12)
    with torch.inference_mode():
        pre = m(x[:, :4], pos=torch.arange(4).expand(3, -1), cache=kv)
        assert torch.allclose(pre, full[:, :4], atol=1e-5)
        for t in range(4, 9):  # one patch per step
            step = m(x[:, t:t + 1], pos=torch.full((3, 1), t), cache=kv)
            assert torch.allclose(step[:, 0], full[:, t], atol=1e-5)
        # rows at different slots; slots past a row's own are masked out whatever the cache holds
        kv2 = ts.new_cache(m, 3, 12)
        m(x[:, :6], pos=torch.arange(6).expand(3, -1), cache=kv2)
        pos = torch.tensor([[2], [4], [5]])
        out = m(x[torch.arange(3)[:, None], pos], pos=pos, cache=kv2)
    assert torch.allclose(out[:, 0], full[torch.arange(3), pos[:, 0]], atol=1e-5)
    with pytest.raises(ValueError, match="pos and cache together"):
        m(x, pos=torch.arange(9).expand(3, -1))
    with pytest.raises(ValueError, match="max_patches"):
        m(x[:, :1], pos=torch.full((3, 1), 16), cache=ts.new_cache(m, 3, 20))


def test_cached_draft_feeds_one_patch_and_finished_rows_leave():
    """After the first iteration a draft step feeds 1 patch (2 on the iteration's first step) and
    a verify k + 1; rows that finish early leave the batch, so later forwards see fewer rows."""
    target, draft = tiny(0), tiny(1)
    ctx = series(batch=8, points=32)
    shapes = {"target": [], "draft": []}
    hooks = [m.embed.register_forward_hook(lambda mod, inp, out, name=name: shapes[name].append(tuple(inp[0].shape[:2])))
             for name, m in (("target", target), ("draft", draft))]
    out = ts.speculative_forecast(target, draft, ctx, 64, k=3, tol=0.5)
    for h in hooks:
        h.remove()
    assert shapes["draft"][0] == (8, 4) and shapes["target"][0] == (8, 3 + 4)  # first iteration: the context
    assert all(w <= 2 for _, w in shapes["draft"][1:]) and all(1 <= w <= 4 for _, w in shapes["target"][1:])
    rows = [b for b, _ in shapes["target"]]
    assert rows == sorted(rows, reverse=True) and rows[-1] < 8  # rows only leave
    assert len(shapes["target"]) == out.target_calls and out.emitted == 8 * 8
    full = ts.speculative_forecast(target, draft, ctx, 64, k=3, tol=0.5, cache=False)
    assert full.accepted == out.accepted and torch.allclose(full.values, out.values, atol=1e-4)


def test_seed001_rule_is_both_rules_at_once():
    target, draft = tiny(0), tiny(1)
    ctx = series(batch=16, points=32)
    run = lambda **kw: ts.speculative_forecast(target, draft, ctx, 48, k=3, seed=3, **kw)
    gauss, tol = run(rule="gaussian", sigma=0.3), run(rule="tolerance", tol=0.5)
    assert torch.equal(run(rule="seed001", sigma=0.3, tol=math.inf, bias=math.inf).values, gauss.values)
    assert torch.equal(run(rule="seed001", sigma=math.inf, tol=0.5).values, tol.values)
    both = run(rule="seed001", sigma=0.3, tol=0.5)
    assert both.accepted < min(gauss.accepted, tol.accepted) or both.accepted == 0


def test_infinite_tolerance_accepts_every_draft_patch():
    target, draft = tiny(0), tiny(1)
    ctx, horizon = series(points=32), 40  # 5 patches
    for rule in ("tolerance", "gaussian"):
        out = ts.speculative_forecast(target, draft, ctx, horizon, k=2, rule=rule, tol=math.inf, sigma=math.inf)
        assert out.proposed > 0 and out.accepted == out.proposed and out.acceptance_rate == 1.0
    # k >= horizon patches - 1: the draft writes patches 1..4, the target's bonus is patch 5
    out = ts.speculative_forecast(target, draft, ctx, horizon, k=4, tol=math.inf, cache=False)
    free = ts.target_forecast(draft, ctx, horizon, cache=False).values  # the draft's own rollout, same buffer shape
    assert out.target_calls == 1 and out.draft_calls == 4
    assert torch.equal(out.values[:, :32], free[:, :32])
    assert not torch.allclose(out.values[:, 32:], free[:, 32:])


def test_same_draft_as_target_is_accepted_and_exact():
    target = tiny(0)
    ctx = series(points=32)
    ref = ts.target_forecast(target, ctx, 40, cache=False)
    out = ts.speculative_forecast(target, tiny(0), ctx, 40, k=3, tol=0.0, cache=False)
    assert out.acceptance_rate == 1.0 and torch.equal(out.values, ref.values)
    assert out.target_calls < ref.target_calls
    # cached: draft and target feed different shapes, so equal only to rounding (tol 1e-10)
    out = ts.speculative_forecast(target, tiny(0), ctx, 40, k=3, tol=1e-10)
    assert out.acceptance_rate == 1.0 and torch.allclose(out.values, ref.values, atol=1e-5)


def test_partial_acceptance_is_deterministic_and_counts_add_up():
    target, draft = tiny(0), tiny(1)
    ctx = series(batch=16, points=32)
    a = ts.speculative_forecast(target, draft, ctx, 48, k=3, rule="gaussian", sigma=0.3, seed=7)
    b = ts.speculative_forecast(target, draft, ctx, 48, k=3, rule="gaussian", sigma=0.3, seed=7)
    assert torch.equal(a.values, b.values) and a.accepted == b.accepted
    assert a.emitted == 16 * 6 and 0 <= a.accepted <= a.proposed
    assert a.values.shape == (16, 48)
    some = ts.speculative_forecast(target, draft, ctx, 48, k=3, tol=0.5)
    assert 0 < some.accepted < some.proposed


def test_bad_input_raises_value_error():
    target, draft = tiny(0), tiny(1)
    ctx = series(points=32)
    with pytest.raises(ValueError, match="multiple of the patch"):
        ts.target_forecast(target, ctx[:, :30], 8)
    with pytest.raises(ValueError, match="horizon"):
        ts.target_forecast(target, ctx, 0)
    with pytest.raises(ValueError, match="max_patches"):
        ts.target_forecast(target, ctx, 200)
    with pytest.raises(ValueError, match="unknown rule"):
        ts.speculative_forecast(target, draft, ctx, 16, rule="greedy")
    with pytest.raises(ValueError, match="k"):
        ts.speculative_forecast(target, draft, ctx, 16, k=0)
    other = tiny(1, ts.TSConfig(patch=4, d_model=16, n_heads=2, d_ff=32, max_patches=16))
    with pytest.raises(ValueError, match="patch"):
        ts.speculative_forecast(target, other, ctx, 16)


def test_evaluate_and_timing_helpers():
    target, draft = tiny(0), tiny(1)
    data = series(batch=3, points=200).T.numpy().copy()  # (rows, channels)
    ref = ts.evaluate_forecasts(target, data, 16, context=32, stride=10)
    spec = ts.evaluate_forecasts(target, data, 16, draft=draft, context=32, stride=10, k=1, tol=0.0, cache=False)
    assert ref["windows"] == 16 and ref["series"] == spec["series"] == 3 * 16
    assert spec["mse"] == pytest.approx(ref["mse"], rel=1e-6) and ref["mse_low"] <= ref["mse"] <= ref["mse_high"]
    se, ae, _ = ts.window_errors(target, data, 16, context=32, stride=10, batch_size=8)  # chunks split no window
    assert se.shape == (16,) and se.mean() == pytest.approx(ref["mse"], rel=1e-6)
    batches = ts.window_batches(data, 4, windows_per_batch=2, context=32, horizon=16)
    assert len(batches) == 4 and batches[0][0].shape == (2 * 3, 32) and batches[0][1].shape == (6, 16)
    methods = {"target-only": lambda c, h: ts.target_forecast(target, c, h),
               "spec": lambda c, h: ts.speculative_forecast(target, draft, c, h, k=1, tol=math.inf)}
    runs = ts.forecast_runs(methods, batches, 16, runs=2, progress=False)
    assert len(runs) == 2 * 4 * 2 and set(runs.columns) >= {"run", "prompt", "method", "seconds", "points", "mse"}
    firsts = runs.groupby(["run", "prompt"])["method"].first()
    assert firsts.nunique() == 2  # rotated: each method leads some (run, batch)
    table = ts.speed_summary(runs).set_index("method")
    assert table.loc["target-only", "speedup"] == 1.0 and table.loc["spec", "acceptance"] == 1.0
    assert table.loc["spec", "n_prompts"] == 4 and table.loc["spec", "n_runs"] == 2
    with pytest.raises(ValueError, match="batches"):
        ts.forecast_runs(methods, batches[:1], 16)
    times = ts.forecast_component_times(target, series(points=32), min_run_time=0.01)
    assert set(times) == {"total", "total_iqr", "embedding", "blocks", "attention", "mlp", "norms", "head", "other"}
    assert times["other"] == pytest.approx(times["total"] - sum(times[c] for c in ("embedding", "attention", "mlp", "norms", "head")))


def test_train_resume_save_load(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "data", rows=17420)
    monkeypatch.setitem(ts.ETT_FILES, "ETTh1", hashlib.sha256(path.read_bytes()).hexdigest())
    cfg = ts.TSConfig(d_model=8, n_heads=2, d_ff=8)
    info = ts.train("t", base=cfg, scale=1.0, epochs=1, steps_per_epoch=2, batch_size=8, directory=tmp_path / "w",
                    data_dir=tmp_path / "data", progress=False)
    assert info["history"][0]["epoch"] == 1 and not (tmp_path / "w" / "t" / "checkpoint.pt").exists()
    model, meta = ts.load_model("t", tmp_path / "w")
    assert meta["params"] == count_parameters(model) and model.cfg.d_model == 8
    deep = ts.train("d", base=ts.TSConfig(d_model=8, n_heads=2, d_ff=8, n_layers=2), epochs=1, steps_per_epoch=1,
                    batch_size=8, directory=tmp_path / "w", data_dir=tmp_path / "data", progress=False)
    assert deep["config"]["n_layers"] == 2  # layers defaults to the base config's
    with pytest.raises(FileNotFoundError, match="python -m specnb.timeseries train"):
        ts.load_model("missing", tmp_path / "w")
    # pooled datasets double the training windows; a distilled student fits its teacher, not the data
    h2 = write_csv(tmp_path / "data2", rows=17420)
    (tmp_path / "data" / "ETTh2.csv").write_bytes(h2.read_bytes())
    monkeypatch.setitem(ts.ETT_FILES, "ETTh2", hashlib.sha256(h2.read_bytes()).hexdigest())
    pooled = ts.train("p", base=cfg, scale=1.0, dataset="ETTh1+ETTh2", epochs=1, steps_per_epoch=1, batch_size=8,
                      directory=tmp_path / "w", data_dir=tmp_path / "data", progress=False)
    assert pooled["train_windows"] == 2 * info["train_windows"] and pooled["dataset"] == "ETTh1+ETTh2"
    student = ts.train("s", base=cfg, scale=0.5, teacher="t", epochs=2, steps_per_epoch=3, batch_size=8, lr=1e-2,
                       directory=tmp_path / "w", data_dir=tmp_path / "data", progress=False)
    assert student["teacher"] == "t" and student["best_val_loss"] < info["best_val_loss"]  # agreement, not truth


def test_study_tables_compose_evaluate_and_timing():
    target, draft = tiny(0), tiny(1)
    data = series(batch=3, points=200).T.numpy().copy()
    batches = ts.window_batches(data, 3, context=32, horizon=32)
    variants = {"tol=0": (draft, dict(k=1, tol=0.0, cache=False)), "tol=inf": (draft, dict(k=1, tol=math.inf))}
    tab = ts.speculative_table(target, variants, data, batches, horizons=(16, 32), runs=1, stride=10, context=32, progress=False)
    assert list(tab["method"]) == ["target-only", "tol=0", "tol=inf"] * 2 and list(tab["horizon"]) == [16] * 3 + [32] * 3
    t = tab.set_index(["horizon", "method"])
    assert t.loc[(16, "tol=0"), "mse_ratio"] == pytest.approx(1.0, abs=1e-6)  # tol 0 is target-only
    assert t.loc[(32, "tol=inf"), "acceptance"] == 1.0 and t.loc[(32, "target-only"), "speedup"] == 1.0
    q = ts.quality_table({"target": target, "d": draft}, data, (16,), stride=10, context=32, progress=False).set_index("model")
    assert q.loc["target", "mse_vs_target"] == 1.0 and q.loc["d", "ratio_low"] <= q.loc["d", "mse_vs_target"] <= q.loc["d", "ratio_high"]
    rules = {"tol": dict(k=1, tol=0.1), "seed001": dict(k=1, rule="seed001", sigma=10.0, bias=100.0, tol=50.0)}
    pr = ts.progression_table(target, {"a": draft}, data, {"a": (0.5, 0.6, 0.1), "target": (0.7, 0.8)}, rules, stride=10,
                              alone_horizon=16, spec_horizon=32, context=32)
    assert list(pr["stage"]) == ["a", "target"] and pr.loc[0, "seed_acceptance"] == 0.1 and pr.loc[1, "seed_mse"] == 0.7
    assert 0 <= pr.loc[0, "acceptance_tol"] <= 1 and np.isnan(pr.loc[1, "acceptance_seed001"])


def test_ensemble_is_the_members_mean_cached_or_not_and_round_trips(tmp_path, monkeypatch):
    members = [tiny(s) for s in range(3)]
    ens = ts.PatchEnsemble(members).eval()
    x = torch.randn(4, 6, 8)
    assert torch.allclose(ts.score(ens, x), torch.stack([ts.score(m, x) for m in members]).mean(0), atol=1e-6)
    ctx = series(points=32)
    assert torch.allclose(ts.target_forecast(ens, ctx, 40).values, ts.target_forecast(ens, ctx, 40, cache=False).values, atol=1e-5)
    assert torch.equal(ts.speculative_forecast(ens, tiny(5), ctx, 40, k=2, tol=0.0, cache=False).values,
                       ts.target_forecast(ens, ctx, 40, cache=False).values)
    ts.save_model(ens, tmp_path / "e", {"name": "e"})
    back, info = ts.load_model("e", tmp_path)
    assert isinstance(back, ts.PatchEnsemble) and len(info["members"]) == 3 and torch.equal(ts.score(back, x), ts.score(ens, x))
    with pytest.raises(ValueError, match="share patch"):
        ts.PatchEnsemble([tiny(0), tiny(1, ts.TSConfig(patch=4, d_model=16, n_heads=2, d_ff=32, max_patches=16))])
    path = write_csv(tmp_path / "data", rows=17420)
    monkeypatch.setitem(ts.ETT_FILES, "ETTh1", hashlib.sha256(path.read_bytes()).hexdigest())
    info = ts.train_ensemble("t", members=2, base=ts.TSConfig(d_model=8, n_heads=2, d_ff=8), epochs=1, steps_per_epoch=1,
                             batch_size=8, directory=tmp_path / "w", data_dir=tmp_path / "data", progress=False)
    assert info["seeds"] == [0, 1] and sorted(p.name for p in (tmp_path / "w").iterdir()) == ["t"]
    assert isinstance(ts.load_model("t", tmp_path / "w")[0], ts.PatchEnsemble)


def test_decode_costs_rows_and_ratios():
    target, draft = tiny(0), tiny(1, ts.TSConfig(patch=8, d_model=8, n_heads=2, d_ff=8, max_patches=16))
    costs = ts.decode_costs(target, {"d": draft}, (2, 5), k=2, context=32, min_run_time=0.01)
    assert list(costs["model"]) == ["target", "d"] * 2 and list(costs["batch_series"]) == [2, 2, 5, 5]
    t = costs[costs["model"] == "target"]
    assert (t["c"] == 1.0).all() and (t["verify_steps"] == t["verify_ms"] / t["step_ms"]).all()
    d = costs[costs["model"] == "d"].reset_index(drop=True)
    assert (d["c"] == d["step_ms"] / t["step_ms"].values).all()


def test_verdict_helpers_follow_the_intervals():
    assert ts.combine(["held", "held"]) == "held" and ts.combine(["held", "inconclusive"]) == "inconclusive"
    assert ts.combine(["held", "not held", "inconclusive"]) == "not held" and ts.combine([]) == "inconclusive"
    est, low, high = ts.iqr_ratio(10.0, 2.0, 5.0, 1.0)
    assert est == 2.0 and low == pytest.approx(9 / 5.5) and high == pytest.approx(11 / 4.5)
    scaling = pd.DataFrame({"model": ["t", "a", "b", "c"], "total_ms": [10.0, 4.0, 4.0, 9.0], "total_iqr_ms": [0.1] * 4,
                            "batch_series": [224] * 4})
    spec = lambda speedup, lo, hi, acc, mse=1.0: {"horizon": 720, "method": "d", "speedup": speedup, "ci_low": lo, "ci_high": hi,
                                                  "acceptance": acc, "n_batches": 20, "n_runs": 3, "mse_ratio": mse,
                                                  "mse_ratio_low": mse - 0.01, "mse_ratio_high": mse + 0.01}
    prog = pd.DataFrame({"stage": ["plain", "tuned"], **{f"acceptance_r{s}": [0.5, 0.9] for s in ("", "_low", "_high")}})
    quality = pd.DataFrame({"model": ["target", "d", "d"], "horizon": [96, 96, 720], "windows": [100] * 3,
                            "mse_vs_target": [1.0, 1.05, 0.99], "ratio_low": [1.0, 1.02, 0.97], "ratio_high": [1.0, 1.08, 1.01]})
    v = ts.verdict_table(scaling=scaling, scaling_names={"target": "t", "0.5x": "a", "0.25x": "b", "0.01x": "c"},
                         seed000={"0.5x": 2.96, "0.25x": 2.75, "0.01x": 1.07}, throughput=pd.DataFrame([spec(0.6, 0.5, 0.7, 0.9)]),
                         latency=pd.DataFrame([spec(1.3, 1.1, 1.5, 0.8, 1.01)]), tradeoff=pd.DataFrame([spec(2.0, 1.8, 2.2, 1.0, 1.10)]),
                         progression=prog, quality=quality, seed_draft="d", stages=("plain", "tuned"), rule="r")
    assert list(v["verdict"]) == ["held", "held", "held", "held", "inconclusive"]
    assert "1.30x" in v.loc[3, "ours"]  # the 2.0x setting costs 10% MSE: over the 2% line, so not the pick
    assert "1 of 2" in v.loc[4, "ours"]
    both = pd.DataFrame([spec(1.3, 1.1, 1.5, 0.8, 1.01), spec(2.0, 1.8, 2.2, 1.0, 1.10), spec(1.5, 0.9, 2.1, 0.9, 1.0),
                         {**spec(1.0, 1.0, 1.0, float("nan")), "method": "target-only"}])
    pays = ts.paying_settings(both)
    assert list(pays["speedup"]) == [1.3]  # 2.0x costs 10% MSE, 1.5x's CI reaches below 1, target-only is the baseline
