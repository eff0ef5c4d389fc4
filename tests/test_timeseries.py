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
def test_tolerance_zero_reproduces_target_only_exactly(horizon):
    target, draft = tiny(0), tiny(1)
    ctx = series(points=32)
    ref = ts.target_forecast(target, ctx, horizon)
    assert ref.values.shape == (6, horizon) and ref.target_calls == math.ceil(horizon / 8)
    for k in (1, 3):
        out = ts.speculative_forecast(target, draft, ctx, horizon, k=k, rule="tolerance", tol=0.0)
        assert torch.equal(out.values, ref.values)
        assert out.accepted == 0
        out = ts.speculative_forecast(target, draft, ctx, horizon, k=k, rule="gaussian", sigma=0.0)
        assert torch.equal(out.values, ref.values)


def test_infinite_tolerance_accepts_every_draft_patch():
    target, draft = tiny(0), tiny(1)
    ctx, horizon = series(points=32), 40  # 5 patches
    for rule in ("tolerance", "gaussian"):
        out = ts.speculative_forecast(target, draft, ctx, horizon, k=2, rule=rule, tol=math.inf, sigma=math.inf)
        assert out.proposed > 0 and out.accepted == out.proposed and out.acceptance_rate == 1.0
    # k >= horizon patches - 1: the draft writes patches 1..4, the target's bonus is patch 5
    out = ts.speculative_forecast(target, draft, ctx, horizon, k=4, tol=math.inf)
    free = ts.target_forecast(draft, ctx, horizon).values  # the draft's own rollout, same buffer shape
    assert out.target_calls == 1 and out.draft_calls == 4
    assert torch.equal(out.values[:, :32], free[:, :32])
    assert not torch.allclose(out.values[:, 32:], free[:, 32:])


def test_same_draft_as_target_is_accepted_and_exact():
    target = tiny(0)
    ctx = series(points=32)
    ref = ts.target_forecast(target, ctx, 40)
    out = ts.speculative_forecast(target, tiny(0), ctx, 40, k=3, tol=0.0)
    assert out.acceptance_rate == 1.0 and torch.equal(out.values, ref.values)
    assert out.target_calls < ref.target_calls


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
    spec = ts.evaluate_forecasts(target, data, 16, draft=draft, context=32, stride=10, k=1, tol=0.0)
    assert ref["series"] == spec["series"] == 3 * 16 and ref["mse"] == spec["mse"] and ref["mae"] == spec["mae"]
    runs = ts.time_interleaved({"target": lambda: ts.target_forecast(target, series(), 16),
                                "spec": lambda: ts.speculative_forecast(target, draft, series(), 16, k=1)},
                               repeats=5, progress=False)
    table = ts.summarize_times(runs, "target")
    assert len(runs) == 10 and table.set_index("method").loc["target", "speedup"] == 1.0
    with pytest.raises(ValueError, match="repeats"):
        ts.time_interleaved({"a": lambda: None}, repeats=2)
    times = ts.forecast_component_times(target, series(points=32), min_run_time=0.01)
    assert set(times) == {"total", "total_iqr", "embedding", "attention", "mlp", "norms", "head"}


def test_train_resume_save_load(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "data", rows=17420)
    monkeypatch.setitem(ts.ETT_FILES, "ETTh1", hashlib.sha256(path.read_bytes()).hexdigest())
    cfg = ts.TSConfig(d_model=8, n_heads=2, d_ff=8)
    info = ts.train("t", base=cfg, scale=1.0, epochs=1, steps_per_epoch=2, batch_size=8, directory=tmp_path / "w",
                    data_dir=tmp_path / "data", progress=False)
    assert info["history"][0]["epoch"] == 1 and not (tmp_path / "w" / "t" / "checkpoint.pt").exists()
    model, meta = ts.load_model("t", tmp_path / "w")
    assert meta["params"] == count_parameters(model) and model.cfg.d_model == 8
    with pytest.raises(FileNotFoundError, match="python -m specnb.timeseries train"):
        ts.load_model("missing", tmp_path / "w")


def test_study_tables_compose_evaluate_and_timing():
    target, draft = tiny(0), tiny(1)
    data = series(batch=3, points=200).T.numpy().copy()
    batch = series(batch=4, points=32)
    hz = ts.horizon_table(target, draft, data, batch, horizons=(16, 32), stride=10, repeats=5, context=32, k=1, tol=0.0)
    assert list(hz["method"]) == ["target-only", "speculative"] * 2 and list(hz["horizon"]) == [16, 16, 32, 32]
    exact = hz.set_index(["horizon", "method"])["mse"]
    assert exact[16, "target-only"] == exact[16, "speculative"]  # tol 0 is target-only
    tr = ts.tradeoff_table(target, draft, data, batch, [0.0, math.inf], horizon=32, k=1, stride=10, repeats=5, context=32)
    assert list(tr["method"]) == ["tol=0", "tol=inf"] and tr.set_index("method").loc["tol=inf", "acceptance"] == 1.0
    pr = ts.progression_table(target, {"a": draft}, data, {"a": (0.5, 0.6, 0.1), "target": (0.7, 0.8)}, stride=10,
                              alone_horizon=16, spec_horizon=32, context=32, k=1, tol=0.1)
    assert list(pr["stage"]) == ["a", "target"] and pr.loc[0, "seed_acceptance"] == 0.1 and pr.loc[1, "seed_mse"] == 0.7
