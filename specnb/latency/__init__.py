"""Why a tiny draft is not a fast draft: fixed per-operator cost, counted and modelled (notebook 01).

At batch size 1 an eager decode step is a few hundred small kernels, and each costs a fixed
dispatch/launch time ``t0`` (Python, the dispatcher, allocation, a CUDA launch) before it does any
useful work, so a draft with far fewer parameters can be no faster than its target. This package
measures that cost and builds the latency model

    latency ~= n_ops * t0 + max(FLOPs / peak, bytes / bandwidth)                            (1)

a fixed-overhead term plus the roofline (Williams, Waterman & Patterson 2009, CACM 52(4)), and the
step model that predicts a forward's latency from its per-operator cost and the time to stream its weights
from the level of the memory hierarchy that holds them

    t(T) = F_T + L * (B_T + A_T * d) + W / BW(footprint)                                    (2)

- ``ops``: operator microbenchmarks, the fixed-cost fit t = t0 + work / throughput, operator counts.
- ``model``: decode FLOPs/bytes, the machine roofline, ``LatencyModel`` (1), ``calibrate``, ``predict_vs_measure``.
- ``step``: ``measure_stream_bandwidth`` (BW(footprint)), ``StepModel`` (2), ``fit_step_model``, ``calibrate_step_model``.
- ``ladder``: random-init Llama models (``llama_config``, ``llama_ladder``); the zoo's shapes: ``specnb.zoo.zoo_shaped_models``.
- ``sweeps``: ``decode_sweep``, ``component_times`` / ``component_table`` (forward hooks), ``backend_sweep``.

Imports point one way: ``ops`` and ``ladder`` depend on no sibling; ``step`` on ``ladder``; ``model`` on all three; ``sweeps`` on ``ops``.
"""

from .ladder import ZOO_VOCAB, llama_config, llama_ladder
from .model import LatencyModel, calibrate, decode_flops_bytes, measure_bandwidth, measure_peak_flops, predict_vs_measure
from .ops import (DEFAULT_OPS, EMBEDDING_ROWS, OPS, SDPA_HEAD_DIM, SDPA_HEADS, benchmark_ops, count_operators,
                  fit_fixed_cost, operator_counts)
from .step import STEP_LADDER, STREAM_MB, StepModel, calibrate_step_model, fit_step_model, judged, measure_stream_bandwidth, step_features
from .sweeps import COMPONENTS, backend_sweep, component_table, component_times, decode_sweep

__all__ = [
    "backend_sweep",
    "OPS",
    "DEFAULT_OPS",
    "benchmark_ops",
    "fit_fixed_cost",
    "operator_counts",
    "count_operators",
    "decode_flops_bytes",
    "measure_peak_flops",
    "measure_bandwidth",
    "LatencyModel",
    "calibrate",
    "predict_vs_measure",
    "STEP_LADDER",
    "STREAM_MB",
    "measure_stream_bandwidth",
    "step_features",
    "StepModel",
    "fit_step_model",
    "calibrate_step_model",
    "judged",
    "llama_config",
    "llama_ladder",
    "component_times",
    "component_table",
    "decode_sweep",
    "COMPONENTS",
    "SDPA_HEADS",
    "SDPA_HEAD_DIM",
    "EMBEDDING_ROWS",
    "ZOO_VOCAB",
]
