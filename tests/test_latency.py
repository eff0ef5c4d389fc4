"""specnb.latency: fixed-cost fit, operator counts, FLOPs/bytes, the latency model (no timing assertions)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from specnb.latency import (
    DEFAULT_OPS,
    LatencyModel,
    benchmark_ops,
    calibrate,
    count_operators,
    decode_flops_bytes,
    fit_fixed_cost,
    llama_config,
    llama_ladder,
    measure_bandwidth,
    measure_peak_flops,
    operator_counts,
    predict_vs_measure,
)
from specnb.generate.forward import new_cache, forward


def _synthetic(t0, throughput, work_of, sizes=(16, 32, 64, 128, 256, 512, 1024), op="linear"):
    return pd.DataFrame([{"op": op, "size": n, "work": float(work_of(n)), "median_s": t0 + work_of(n) / throughput}
                         for n in sizes])


@pytest.fixture(scope="module")
def ladder():
    return llama_ladder(widths=(32,), depths=(1, 2, 4), head_dim=16, vocab_size=64, max_positions=128)


def test_fit_recovers_known_t0_and_throughput():
    df = pd.concat([_synthetic(5e-6, 2e10, lambda n: 2 * n * n, op="linear"),
                    _synthetic(2e-6, 1e9, lambda n: n, op="add")])
    fit = fit_fixed_cost(df).set_index("op")
    assert fit.loc["linear", "t0_s"] == pytest.approx(5e-6, rel=1e-6)
    assert fit.loc["linear", "throughput"] == pytest.approx(2e10, rel=1e-6)
    assert fit.loc["add", "t0_s"] == pytest.approx(2e-6, rel=1e-6)
    assert fit.loc["add", "throughput"] == pytest.approx(1e9, rel=1e-6)
    assert fit.loc["linear", "r2"] == pytest.approx(1.0)


def test_crossover_size():
    # work = 2 n^2, t0 * throughput = 1e5 FLOPs -> n* = sqrt(5e4) = 223.6; first measured size 256
    fit = fit_fixed_cost(_synthetic(5e-6, 2e10, lambda n: 2 * n * n)).iloc[0]
    assert fit["crossover_size"] == pytest.approx(math.sqrt(5e4), rel=1e-6)
    assert fit["crossover_measured"] == 256
    # a fixed cost never reached in range: interpolated beyond, measured NaN
    fit = fit_fixed_cost(_synthetic(1e-3, 1e9, lambda n: n, sizes=(16, 64))).iloc[0]
    assert fit["crossover_size"] == pytest.approx(1e6, rel=1e-6)
    assert math.isnan(fit["crossover_measured"])


def test_fit_t0_is_non_negative():
    df = pd.DataFrame({"op": "x", "size": [10, 20, 40], "work": [10.0, 20.0, 40.0], "median_s": [0.5, 2.0, 4.0]})
    fit = fit_fixed_cost(df).iloc[0]
    assert fit["t0_s"] >= 0


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="lacks"):
        fit_fixed_cost(pd.DataFrame({"op": ["a"], "size": [1]}))
    with pytest.raises(ValueError, match=">= 2"):
        fit_fixed_cost(pd.DataFrame({"op": ["a"], "size": [1], "work": [1.0], "median_s": [1.0]}))
    with pytest.raises(ValueError, match="> 0"):
        fit_fixed_cost(pd.DataFrame({"op": "a", "size": [1, 2], "work": [1.0, 2.0], "median_s": [0.0, 1.0]}))


def test_benchmark_ops_columns():
    df = benchmark_ops([8, 16], ops=DEFAULT_OPS, min_run_time=0.001)
    assert {"op", "size", "work", "unit", "median_s", "iqr_s"} <= set(df.columns)
    assert len(df) == 2 * len(DEFAULT_OPS)
    assert (df["median_s"] > 0).all()
    lin = df[df.op == "linear"].set_index("size")["work"]
    assert lin[16] == 2 * 16 * 16
    assert fit_fixed_cost(df)["op"].tolist() == list(DEFAULT_OPS)


def test_benchmark_ops_bad_input():
    with pytest.raises(ValueError, match="unknown op"):
        benchmark_ops([16], ops=["conv"])
    with pytest.raises(ValueError, match=">= 1"):
        benchmark_ops([0, 16])
    with pytest.raises(ValueError, match="empty"):
        benchmark_ops([])


def _decode_count(model, context=5, **kw):
    cache = new_cache(model)
    with torch.inference_mode():
        forward(model, torch.arange(context)[None], cache)
    return count_operators(model, torch.tensor([[7]]), cache, **kw), cache


def test_count_operators_linear_in_layers_and_deterministic(ladder):
    counts = [_decode_count(m)[0] for m in ladder.values()]  # depths 1, 2, 4
    per_layer = counts[1] - counts[0]
    assert per_layer > 10
    assert counts[2] - counts[1] == 2 * per_layer
    m = ladder["w32-d2"]
    assert _decode_count(m)[0] == _decode_count(m)[0]
    no_views = [_decode_count(m, views=False)[0] for m in ladder.values()]
    assert no_views[0] < counts[0] and no_views[2] - no_views[1] == 2 * (no_views[1] - no_views[0])


def test_count_operators_leaves_cache_unchanged(ladder):
    _, cache = _decode_count(ladder["w32-d1"], context=5)
    assert cache.get_seq_length() == 5
    c = operator_counts(ladder["w32-d1"], torch.tensor([[1, 2, 3]]))
    assert c["linear"] > 0 and c["scaled_dot_product_attention"] == 1
    with pytest.raises(ValueError, match="shape"):
        count_operators(ladder["w32-d1"], torch.tensor([1, 2]))


def test_decode_flops_match_hand_count(ladder):
    model = ladder["w32-d2"]
    cfg = model.config
    # matmul weights inside the layers (every nn.Linear of the decoder) + lm_head (tied: d x V)
    layer_linear = sum(mod.weight.numel() for name, mod in model.model.layers.named_modules()
                       if isinstance(mod, torch.nn.Linear))
    L, h, hd, d, V = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size, cfg.vocab_size
    for context, tokens in [(10, 1), (50, 1), (10, 4)]:
        T = context + tokens
        fb = decode_flops_bytes(cfg, context, tokens)
        expected = tokens * (2 * layer_linear + 2 * d * V) + 4 * L * h * hd * tokens * T
        assert fb["flops"] == expected
        assert fb["attention_flops"] == 4 * L * h * hd * tokens * T
    # ~2 x non-embedding params per token (norm weights are the only difference)
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    assert decode_flops_bytes(cfg, 0, 1)["matmul_flops"] - 2 * d * V == pytest.approx(2 * non_embedding, rel=0.02)


def test_decode_bytes_parts_and_scaling(ladder):
    cfg = ladder["w32-d2"].config
    d = cfg.hidden_size
    params = sum(p.numel() for p in ladder["w32-d2"].parameters())  # tied: embedding counted once
    a, b = decode_flops_bytes(cfg, 10, 1), decode_flops_bytes(cfg, 100, 1)
    assert a["weight_bytes"] == 4 * (params + d)  # all weights once + the gathered embedding row
    assert a["bytes"] == a["weight_bytes"] + a["kv_bytes"] + a["activation_bytes"]
    assert b["flops"] > a["flops"] and b["kv_bytes"] > a["kv_bytes"] and b["weight_bytes"] == a["weight_bytes"]
    kv_width = 2 * cfg.num_key_value_heads * cfg.head_dim * cfg.num_hidden_layers
    assert decode_flops_bytes(cfg, 10, 1, cache_copy=False)["kv_bytes"] == 4 * kv_width * (11 + 1)
    assert decode_flops_bytes(cfg, 10, 1, dtype_bytes=2)["bytes"] == a["bytes"] / 2
    with pytest.raises(ValueError):
        decode_flops_bytes(cfg, -1, 1)
    with pytest.raises(ValueError):
        decode_flops_bytes(cfg, 10, 0)


def test_gqa_reduces_kv_bytes_and_flops():
    mha = llama_config(64, 2, head_dim=16, vocab_size=64)
    gqa = llama_config(64, 2, head_dim=16, vocab_size=64)
    gqa.num_key_value_heads = 1
    assert decode_flops_bytes(gqa, 32)["kv_bytes"] == decode_flops_bytes(mha, 32)["kv_bytes"] / 4
    assert decode_flops_bytes(gqa, 32)["matmul_flops"] < decode_flops_bytes(mha, 32)["matmul_flops"]


def test_latency_model_arithmetic():
    lm = LatencyModel(t0_s=1e-5, peak_flops=1e11, bandwidth=1e10)
    # 300 ops * 10 us = 3 ms; compute 1e8 / 1e11 = 1 ms; memory 2e7 / 1e10 = 2 ms -> 3 + 2 = 5 ms
    e = lm.estimate(300, 1e8, 2e7)
    assert e["overhead_s"] == pytest.approx(3e-3)
    assert e["compute_s"] == pytest.approx(1e-3) and e["memory_s"] == pytest.approx(2e-3)
    assert e["predicted_s"] == pytest.approx(5e-3)
    assert lm.estimate(300, 1e9, 2e7)["predicted_s"] == pytest.approx(3e-3 + 1e-2)  # compute-bound
    with pytest.raises(ValueError):
        LatencyModel(t0_s=-1.0, peak_flops=1.0, bandwidth=1.0)


def test_latency_model_predict_uses_counts(ladder):
    m = ladder["w32-d2"]
    lm = LatencyModel(t0_s=1e-5, peak_flops=1e11, bandwidth=1e10)
    parts = lm.breakdown(m, context=8, tokens=1)
    assert parts["n_ops"] == _decode_count(m, context=8)[0]
    fb = decode_flops_bytes(m.config, 8, 1)
    assert parts["predicted_s"] == pytest.approx(parts["n_ops"] * 1e-5 + max(fb["flops"] / 1e11, fb["bytes"] / 1e10))
    assert lm.predict(m, 8, 4) > lm.predict(m, 8, 1)


def test_roofline_measurements_positive():
    assert measure_peak_flops("cpu", n=64, min_run_time=0.001) > 0
    assert measure_peak_flops("cpu", n=64, rows=4, min_run_time=0.001) > 0
    with pytest.raises(ValueError):
        measure_peak_flops("cpu", n=64, rows=0)
    assert measure_bandwidth("cpu", mb=1, min_run_time=0.001) > 0
    with pytest.raises(ValueError):
        measure_bandwidth("cpu", mb=0)


def test_calibrate_and_predict_vs_measure(ladder):
    lm = calibrate("cpu", models={k: ladder[k] for k in ("w32-d1", "w32-d2")}, context=8, matmul_n=64,
                   copy_mb=1, min_run_time=0.005)
    assert lm.t0_s >= 0 and lm.method.startswith("decode")
    table = predict_vs_measure({"d1": ladder["w32-d1"]}, lm, context=8, tokens=(1, 3), min_run_time=0.005)
    assert table["tokens"].tolist() == [1, 3]
    assert {"name", "predicted_s", "measured_s", "error", "n_ops"} <= set(table.columns)
    assert np.allclose(table["error"], table["predicted_s"] / table["measured_s"] - 1)
    with pytest.raises(ValueError, match="method"):
        calibrate("cpu", method="guess")
    with pytest.raises(ValueError, match="tokens"):
        predict_vs_measure({"d1": ladder["w32-d1"]}, lm, tokens=(0,))


def test_llama_ladder_shapes():
    models = llama_ladder(widths=(416,), depths=(1,), vocab_size=4096)
    cfg = models["w416-d1"].config
    assert (cfg.num_attention_heads, cfg.head_dim, cfg.intermediate_size, cfg.vocab_size) == (8, 52, 1024, 4096)
    with pytest.raises(ValueError):
        llama_config(0, 1)


def test_latency_model_skinny_roof_and_combine():
    from specnb.latency import LatencyModel

    lm = LatencyModel(1e-5, peak_flops=100.0, bandwidth=10.0, peak_by_tokens={1: 50.0, 4: 20.0})
    assert lm.peak_for(1) == 50.0 and lm.peak_for(3) == 50.0 and lm.peak_for(8) == 20.0
    assert LatencyModel(0.0, 100.0, 10.0).peak_for(4) == 100.0
    e = lm.estimate(10, flops=200.0, bytes=50.0, tokens=4)  # compute 10 s, memory 5 s
    assert e["predicted_s"] == pytest.approx(1e-4 + 10.0)
    s = LatencyModel(1e-5, 100.0, 10.0, peak_by_tokens={4: 20.0}, combine="sum").estimate(10, 200.0, 50.0, tokens=4)
    assert s["predicted_s"] == pytest.approx(1e-4 + 15.0)
    with pytest.raises(ValueError, match="combine"):
        LatencyModel(0.0, 1.0, 1.0, combine="mean")


def test_component_times_cover_the_forward():
    from specnb.latency import component_times, llama_ladder

    model = llama_ladder(widths=(32,), depths=(2,), head_dim=16)["w32-d2"]
    calls = []
    h = model.model.layers[0].mlp.register_forward_hook(lambda *a: calls.append(1))
    parts = component_times(model, context=8, repeats=5)
    h.remove()
    assert len(calls) == 7  # prefill + one warm-up + 5 timed steps, each running the MLP once
    assert set(parts) == {"attention", "mlp", "norms", "embedding", "head", "total", "other"}
    assert all(parts[c] > 0 for c in ("attention", "mlp", "norms", "embedding", "head"))
    assert parts["total"] >= parts["attention"] + parts["mlp"]
    with pytest.raises(ValueError, match="repeats"):
        component_times(model, repeats=2)


def test_zoo_shaped_models_and_decode_sweep():
    from specnb.latency import decode_sweep
    from specnb.zoo import zoo_shaped_models
    from specnb.zoo import spec_parameters, zoo_specs

    models = zoo_shaped_models(["p0.01", "d1"])
    specs = {s.name: s for s in zoo_specs()}
    assert sum(p.numel() for p in models["d1"].parameters()) == spec_parameters(specs["d1"])
    sweep = decode_sweep(models, context=8, min_run_time=0.01)
    assert list(sweep["model"]) == ["p0.01", "d1"] and list(sweep["depth"]) == [12, 1]
    assert sweep.loc[0, "n_ops"] > sweep.loc[1, "n_ops"] and (sweep["decode_s"] > 0).all()
    with pytest.raises(ValueError, match="unknown zoo"):
        zoo_shaped_models(["nope"])


def test_component_table_interleaves_models():
    from specnb.latency import component_table, llama_ladder

    models = llama_ladder(widths=(32,), depths=(1, 2), head_dim=16)
    order = []
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: order.append(n)) for n, m in models.items()]
    table = component_table(models, context=8, rounds=2, repeats=5)
    for h in handles:
        h.remove()
    assert list(table.index) == ["w32-d1", "w32-d2"] and "total" in table.columns
    # round 0 visits d1 then d2, round 1 d2 then d1 (7 forwards per visit: prefill, warm-up, 5 steps)
    assert order == ["w32-d1"] * 7 + ["w32-d2"] * 14 + ["w32-d1"] * 7


def test_backend_sweep_rows_per_model_backend_and_tokens():
    from specnb.latency import backend_sweep
    from specnb.models import tiny_model

    models = {"a": tiny_model("llama", layers=2, hidden=32, vocab_size=64), "b": tiny_model("llama", layers=1, hidden=32, vocab_size=64)}
    out = backend_sweep(models, backends=("eager", "static"), context=8, tokens=(1, 3), min_run_time=0.01, progress=False)
    assert len(out) == 2 * 2 * 2 and set(out["backend"]) == {"eager", "static"}
    assert (out["median_s"] > 0).all() and (out["compile_seconds"] == 0).all()  # nothing compiled here
    assert out.set_index(["name", "backend", "tokens"]).loc[("b", "static", 3), "layers"] == 1
    with pytest.raises(ValueError, match="backend must be one of"):
        backend_sweep(models, backends=("turbo",), context=8, min_run_time=0.01, progress=False)
    with pytest.raises(ValueError, match="at least one model"):
        backend_sweep({}, context=8)


# --------------------------------------------------------------------------------------------
# The step model (2)
# --------------------------------------------------------------------------------------------

_STREAM = pd.DataFrame({"working_set_bytes": [1e6, 3e6], "bytes_per_s": [4e10, 1e10]})  # cache, then DRAM


@pytest.fixture(scope="module")
def step_ladder():
    return llama_ladder(widths=(32, 48), depths=(1, 2), head_dim=16, vocab_size=64, max_positions=128)


def test_step_features_hand_count(ladder):
    from specnb.latency import step_features

    m = ladder["w32-d2"]  # width 32, ffn 80 (ratio 1024/416 rounded to 16), 2 heads of 16, vocab 64, tied head
    cfg = m.config
    d, f, v, L = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    feats = step_features(m, context=8, tokens=3)
    linear = L * (4 * d * d + 3 * d * f) + v * d  # q k v o, gate up down, lm_head (= embedding)
    assert feats["layers"] == 2 and feats["width"] == 32
    assert feats["weight_bytes"] == 4 * linear
    params = linear + L * 2 * d + d  # + two norms per layer and the final norm; embedding tied to lm_head
    kv = 2 * L * (8 + 3) * cfg.num_key_value_heads * cfg.head_dim
    assert feats["footprint_bytes"] == 4 * (params + kv)
    with pytest.raises(ValueError, match="tokens"):
        step_features(m, context=8, tokens=0)
    with pytest.raises(ValueError, match="nn.Linear"):
        step_features(torch.nn.Sequential(torch.nn.ReLU()), context=1)


def test_step_model_arithmetic_and_interpolation():
    from specnb.latency import StepModel

    sm = StepModel({1: (1e-4, 2e-5, 1e-7), 4: (2e-4, 3e-5, 2e-7)}, _STREAM)
    assert sm.bandwidth(2e6) == pytest.approx(2.5e10)  # halfway between the two rows
    assert sm.bandwidth(1e3) == 4e10 and sm.bandwidth(1e9) == 1e10  # flat beyond the ends
    e = sm.estimate(layers=12, width=100, weight_bytes=1e8, footprint_bytes=1e9, tokens=1)
    assert e["stream_s"] == pytest.approx(1e8 / 1e10) and e["width_s"] == pytest.approx(12 * 1e-7 * 100)
    assert e["predicted_s"] == pytest.approx(1e-4 + 12 * 2e-5 + 12 * 1e-7 * 100 + 1e-2)
    assert sm.estimate(12, 100, 1e8, 1e9, tokens=4)["predicted_s"] == pytest.approx(2e-4 + 12 * 3e-5 + 12 * 2e-7 * 100 + 1e-2)
    with pytest.raises(ValueError, match="tokens=\\(1, 3, 4\\)"):
        sm.estimate(12, 100, 1e8, 1e9, tokens=3)
    frame = sm.to_frame()
    assert frame["tokens"].tolist() == [1, 4] and frame["dram_bytes_per_s"].iloc[0] == 1e10
    with pytest.raises(ValueError, match=">= 0"):
        StepModel({1: (-1.0, 0.0, 0.0)}, _STREAM)
    with pytest.raises(ValueError, match="3 values"):
        StepModel({1: (0.0, 0.0, 0.0, 1.0)}, _STREAM)
    with pytest.raises(ValueError, match="measure_stream_bandwidth"):
        StepModel({1: (0.0, 0.0, 0.0)}, pd.DataFrame({"bytes": [1.0]}))


def test_fit_step_model_recovers_known_coefficients():
    from specnb.latency import StepModel, fit_step_model

    truth = StepModel({1: (3e-4, 2e-4, 5e-7), 4: (4e-4, 3e-4, 9e-7)}, _STREAM)
    shapes = [(1, 32, 2e5, 5e5), (4, 64, 1e6, 1.2e6), (12, 96, 5e6, 6e6), (2, 256, 3e6, 4e6), (8, 128, 8e7, 9e7),
              (12, 416, 1e8, 1.1e8)]
    rows = [{"tokens": t, "layers": L, "width": d, "weight_bytes": w, "footprint_bytes": fp,
             "measured_s": truth.estimate(L, d, w, fp, tokens=t)["predicted_s"]} for t in (1, 4) for L, d, w, fp in shapes]
    fit = fit_step_model(pd.DataFrame(rows), _STREAM)
    for t in (1, 4):
        assert fit.coefficients[t] == pytest.approx(truth.coefficients[t], rel=1e-6)
    assert fit.calibration["error"].abs().max() < 1e-9
    with pytest.raises(ValueError, match=">= 3"):
        fit_step_model(pd.DataFrame(rows[:2]), _STREAM)
    with pytest.raises(ValueError, match="lacks"):
        fit_step_model(pd.DataFrame(rows).drop(columns="layers"), _STREAM)


def test_measure_stream_bandwidth_builds_whole_matrices():
    from specnb.latency import measure_stream_bandwidth

    s = measure_stream_bandwidth((0.05, 0.2), shape=(64, 32), min_run_time=0.001)
    per = 64 * 32 * 4
    assert s["matrices"].tolist() == [round(0.05 * 2**20 / per), round(0.2 * 2**20 / per)]
    assert (s["working_set_bytes"] == s["matrices"] * per).all() and (s["bytes_per_s"] > 0).all()
    with pytest.raises(ValueError, match="sizes_mb"):
        measure_stream_bandwidth((0,))
    with pytest.raises(ValueError, match="shape"):
        measure_stream_bandwidth((1,), shape=(0, 4))


def test_calibrate_step_model_end_to_end(step_ladder):
    from specnb.latency import calibrate_step_model, measure_stream_bandwidth

    stream = measure_stream_bandwidth((0.05, 0.2), shape=(64, 32), min_run_time=0.001)
    sm = calibrate_step_model(step_ladder, tokens=(1, 3), context=8, rounds=1, min_run_time=0.002, stream=stream, progress=False)
    assert sm.tokens == [1, 3]
    assert len(sm.calibration) == 2 * len(step_ladder) and set(sm.calibration["name"]) == set(step_ladder)
    ops = LatencyModel(1e-6, 1e9, 1e9)
    table = predict_vs_measure({"d1": step_ladder["w32-d1"]}, sm, context=8, tokens=(1, 3), min_run_time=0.002, rounds=1,
                               others={"ops": ops})
    assert {"fixed_s", "width_s", "stream_s", "predicted_s", "measured_s"} <= set(table.columns)
    assert np.allclose(table["predicted_s"], table["fixed_s"] + table["width_s"] + table["stream_s"])
    assert np.allclose(table["predicted_s_ops"], [ops.predict(step_ladder["w32-d1"], 8, t) for t in (1, 3)])
    assert np.allclose(table["error_ops"], table["predicted_s_ops"] / table["measured_s"] - 1)
    assert np.allclose(table["predicted_s"], [sm.predict(step_ladder["w32-d1"], 8, t) for t in (1, 3)])
    with pytest.raises(ValueError, match=">= 3 calibration models"):
        calibrate_step_model({"a": step_ladder["w32-d1"]}, stream=stream)
    with pytest.raises(ValueError, match="must not be calibration models"):
        calibrate_step_model(step_ladder, check={"w32-d1": step_ladder["w32-d1"]}, stream=stream)


def test_calibrate_step_model_checks_models_it_does_not_fit(step_ladder):
    from specnb.latency import calibrate_step_model, measure_stream_bandwidth

    stream = measure_stream_bandwidth((0.05, 0.2), shape=(64, 32), min_run_time=0.001)
    ops = LatencyModel(1e-6, 1e9, 1e9)
    sm = calibrate_step_model(step_ladder, tokens=(1, 2), context=8, rounds=1, min_run_time=0.002, stream=stream,
                              check={"again": step_ladder["w32-d2"]}, others={"ops": ops}, progress=False)
    assert "again" not in set(sm.calibration["name"])
    assert sm.check[["name", "tokens"]].values.tolist() == [["again", 1], ["again", 2]]
    assert np.allclose(sm.check["predicted_s"], [sm.predict(step_ladder["w32-d2"], 8, t) for t in (1, 2)])
    assert np.allclose(sm.check["error"], sm.check["predicted_s"] / sm.check["measured_s"] - 1)
    assert np.allclose(sm.check["predicted_s_ops"], [ops.predict(step_ladder["w32-d2"], 8, t) for t in (1, 2)])
