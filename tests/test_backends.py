"""The static and compiled backends (specnb.generate.static, specnb.bench.backends): same tokens, statistics and distribution as the
eager loops; rollback by position leaves stale slots that the mask hides; compiled steps are built
once per (model, shape); unsupported models are refused by name.

Compiled tests share one module-scoped set of fresh tiny Llama models whose steps are compiled once
(target: 1, 3 and 5 tokens; each draft: 2 and 1 tokens), so the whole file compiles 9 small steps.
"""

import inspect

import pytest
import torch
from transformers import JetMoeConfig, JetMoeForCausalLM, Qwen2Config, Qwen2ForCausalLM, StaticCache
from transformers.masking_utils import create_causal_mask

from specnb.bench import backends as bb
from specnb.stats import paired_speedup
from specnb.generate import static as fp
from specnb.generate import autoregressive_generate, cache_argument, speculative_generate
from specnb.models import perturbed_copy, tiny_model

from conftest import FAMILIES, K, PROMPT, V, chi2_pvalue, exact_joint, hf_greedy, prompts, sampled_continuations
from conftest import N_NEW_SAMPLED as SAMPLE_NEW

TEMP = 1.0

N_NEW = 20


def static_speculative_generate(*args, compiled=False, **kwargs):
    return speculative_generate(*args, backend="compiled" if compiled else "static", **kwargs)


def static_autoregressive_generate(*args, compiled=False, **kwargs):
    return autoregressive_generate(*args, backend="compiled" if compiled else "static", **kwargs)

# create_causal_mask takes the cache as ``cache`` from transformers 5.24 (``past_key_values`` before)
MASK_CACHE_ARG = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"
COMPILED_KS = (2, 4)


def same_statistics(a, b) -> bool:
    return (a.accepted, a.proposed, a.target_calls, a.draft_calls, a.sources) == (
        b.accepted, b.proposed, b.target_calls, b.draft_calls, b.sources)


# --------------------------------------------------------------------------------------------
# Static backend (eager forwards on a static cache)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["copy", "perturbed", "random"])
def test_static_greedy_equals_eager_and_generate_llama(pairs, kind):
    target, drafts = pairs["llama"]
    for ids in prompts(3):
        ref = hf_greedy(target, ids, N_NEW)
        assert torch.equal(autoregressive_generate(target, ids, N_NEW).sequences, ref)
        ar = static_autoregressive_generate(target, ids, N_NEW)
        assert torch.equal(ar.sequences, ref) and ar.method == "autoregressive-static"
        assert ar.target_calls == N_NEW and ar.compile_seconds == 0.0
        for k in range(1, 8):
            out = static_speculative_generate(target, drafts[kind], ids, N_NEW, k=k)
            assert torch.equal(out.sequences, ref), (kind, k)
            assert out.method == "speculative-static" and out.k == k
            assert same_statistics(out, speculative_generate(target, drafts[kind], ids, N_NEW, k=k)), (kind, k)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "llama"])
def test_static_greedy_other_families(pairs, family):
    target, drafts = pairs[family]
    for ids in prompts(2, seed=1):
        ref = hf_greedy(target, ids, N_NEW)
        assert torch.equal(static_autoregressive_generate(target, ids, N_NEW).sequences, ref)
        for kind in ("copy", "perturbed", "random"):
            for k in (1, 3, 7):
                out = static_speculative_generate(target, drafts[kind], ids, N_NEW, k=k)
                assert torch.equal(out.sequences, ref), (family, kind, k)
                assert same_statistics(out, speculative_generate(target, drafts[kind], ids, N_NEW, k=k))


def test_static_acceptance_all_none_and_boundaries(pairs):
    target, drafts = pairs["llama"]
    ids = prompts(1)[0]
    full = static_speculative_generate(target, drafts["copy"], ids, 21, k=4)
    assert full.accepted == [4, 4, 4, 4] and full.target_calls == 5 and full.draft_calls == 1 + 16
    assert static_speculative_generate(target, drafts["random"], ids, 40, k=4).acceptance_rate < 0.2
    for n_new in (1, 2, 3, 5, 8):  # k_i shrinks near max_new_tokens; the verification stays k+1 wide
        ref = hf_greedy(target, ids, n_new)
        for k in (1, 4, 7):
            out = static_speculative_generate(target, drafts["perturbed"], ids, n_new, k=k)
            assert torch.equal(out.sequences, ref) and all(p <= n_new - 1 for p in out.proposed)


def test_static_eos_and_self_draft(pairs):
    target, drafts = pairs["llama"]
    ids = prompts(1, seed=4)[0]
    eos = hf_greedy(target, ids, 30)[0, ids.shape[1] + 6].item()
    ref = hf_greedy(target, ids, 30, eos=eos)
    assert ref.shape[1] < ids.shape[1] + 30
    for kind in ("copy", "random"):
        assert torch.equal(static_speculative_generate(target, drafts[kind], ids, 30, k=3, eos_token_id=eos).sequences, ref)
    assert torch.equal(static_autoregressive_generate(target, ids, 30, eos_token_id=eos).sequences, ref)
    # the target drafting for itself gets a second cache (one per role), not a shared one
    out = static_speculative_generate(target, target, ids, N_NEW, k=3)
    assert torch.equal(out.sequences, hf_greedy(target, ids, N_NEW)) and out.accepted == out.proposed
    assert {(id(target), "target"), (id(target), "draft")} <= set(fp._STATE)
    fp.release(target)  # frees both caches; the next call allocates again
    assert not {(id(target), "target"), (id(target), "draft")} & set(fp._STATE)


class Cycle:
    """A duck-typed schedule: k cycles through ``ks`` (bounded by k_max = max(ks))."""

    def __init__(self, ks):
        self.ks, self.k_max, self.name, self.i = list(ks), max(ks), f"cycle{list(ks)}", 0

    def next_k(self):
        return self.ks[self.i % len(self.ks)]

    def update(self, accepted, proposed):
        self.i += 1

    def reset(self):
        self.i = 0


def test_static_schedule_pads_to_k_max(pairs):
    target, drafts = pairs["llama"]
    ids = prompts(1, seed=2)[0]
    schedule = Cycle([1, 3, 2])
    out = static_speculative_generate(target, drafts["perturbed"], ids, N_NEW, k=schedule)
    assert torch.equal(out.sequences, hf_greedy(target, ids, N_NEW)) and out.k == "cycle[1, 3, 2]"
    assert out.proposed[:4] == [1, 3, 2, 1] and schedule.i == 0  # the caller's schedule is untouched
    assert same_statistics(out, speculative_generate(target, drafts["perturbed"], ids, N_NEW, k=schedule))
    unbounded = Cycle([2])
    del unbounded.k_max
    with pytest.raises(ValueError, match="upper bound"):  # the compiled verification has one width: k_max + 1
        static_speculative_generate(target, drafts["perturbed"], ids, N_NEW, k=unbounded, compiled=True)
    out = static_speculative_generate(target, drafts["perturbed"], ids, N_NEW, k=unbounded)  # static: no bound needed
    assert torch.equal(out.sequences, hf_greedy(target, ids, N_NEW)) and set(out.proposed[:-1]) == {2}


# --------------------------------------------------------------------------------------------
# The mask hides stale slots; rollback = writing at an earlier position
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_static_cache_mask_rows_see_only_their_past(attn):
    model = tiny_model("llama", seed=1)
    model.config._attn_implementation = attn
    cache = StaticCache(config=model.config, max_cache_len=32)
    with torch.inference_mode():
        model(input_ids=torch.tensor([[5, 6, 7]]), position_ids=torch.arange(3)[None], use_cache=True,
              **{cache_argument(type(model)): cache})
    slots = torch.arange(32)
    for start in (1, 5, 17):
        for n in (1, 5):
            fp.set_write_position(cache, start)  # slots >= start may hold stale KV from an earlier verification
            embeds = torch.zeros(1, n, model.config.hidden_size)
            mask = create_causal_mask(config=model.config, inputs_embeds=embeds, attention_mask=None,
                                      position_ids=torch.arange(start, start + n)[None], **{MASK_CACHE_ARG: cache})
            allowed = mask[0, 0] if mask.dtype == torch.bool else mask[0, 0] == 0  # eager: additive 0 / -inf
            assert allowed.shape == (n, 32)
            expected = slots[None, :] <= start + torch.arange(n)[:, None]  # row i sees slots <= its own position
            assert torch.equal(allowed, expected), (attn, start, n)
    model.config._attn_implementation = "sdpa"


def _rollback_check(target, compiled: bool, k: int = 4):
    """Verify k+1 tokens (k junk drafts), accept n of them, then write the next token at the slot
    after the accepted prefix: its logits equal a fresh no-cache forward over prefix + token."""
    gen = torch.Generator().manual_seed(0)
    dev = target.device
    state = fp.static_state(target, 64, "target")
    with torch.inference_mode():
        prompt = torch.randint(2, 96, (1, 7), generator=gen).to(dev)
        for n in range(k + 1):
            fp.prefill(target, state, prompt)
            verified = torch.cat([torch.tensor([[3]]), torch.randint(2, 96, (1, k), generator=gen)], dim=1).to(dev)  # (1, k+1)
            fp.run_step(target, state, verified, prompt.shape[1], last_only=False, compiled=compiled)
            accepted = torch.cat([prompt, verified[:, : n + 1]], dim=1)  # prompt, last token, n accepted drafts
            stale = state.cache.layers[0].keys[0, :, accepted.shape[1] : prompt.shape[1] + k + 1].clone()
            nxt = torch.randint(2, 96, (1, 1), generator=gen).to(dev)
            logits = fp.run_step(target, state, nxt, accepted.shape[1], last_only=True, compiled=compiled)[0, -1]
            fresh = target(torch.cat([accepted, nxt], dim=1)).logits[0, -1].float()
            torch.testing.assert_close(logits, fresh, atol=1e-5, rtol=1e-5)
            # no cropping: the rejected drafts' KV is still in the slots after the new token
            after = state.cache.layers[0].keys[0, :, accepted.shape[1] + 1 : prompt.shape[1] + k + 1]
            assert torch.equal(after, stale[:, 1:]) and (after.numel() == 0 or after.abs().sum() > 0)
        # garbage in every slot after the position changes nothing
        fp.prefill(target, state, prompt)
        for layer in state.cache.layers:
            layer.keys[:, :, prompt.shape[1] :] = 1e3
            layer.values[:, :, prompt.shape[1] :] = -1e3
        verified = torch.randint(2, 96, (1, k + 1), generator=gen).to(dev)
        logits = fp.run_step(target, state, verified, prompt.shape[1], last_only=False, compiled=compiled)[0]
        fresh = target(torch.cat([prompt, verified], dim=1)).logits[0, prompt.shape[1] :].float()
        torch.testing.assert_close(logits, fresh, atol=1e-5, rtol=1e-5)


def test_static_rollback_logits_equal_fresh_forward(pairs):
    _rollback_check(pairs["llama"][0], compiled=False)


# --------------------------------------------------------------------------------------------
# Sampling: the exact target distribution, and the eager loop's random-number consumption
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sampling_target():
    return tiny_model("llama", vocab_size=V, hidden=32, layers=2, init_std=0.5, seed=11)


@pytest.mark.slow
def test_static_sampling_matches_target_distribution(sampling_target):
    """test_sampling's chi-square test, on the static backend, with the draft that exercises both
    branches (the eager loop is also tested with a bad draft; below, the static loop reproduces the
    eager loop's samples exactly for the same generator)."""
    target = sampling_target
    draft = perturbed_copy(target, 0.5, seed=3)
    p, q = exact_joint(target), exact_joint(draft)
    assert 0.5 * sum(abs(p[s] - q[s]) for s in p) > 0.1  # the test has power
    gen = torch.Generator().manual_seed(4321)
    samples, accepted = sampled_continuations(lambda: static_speculative_generate(
        target, draft, PROMPT, SAMPLE_NEW, k=K, do_sample=True, temperature=TEMP, generator=gen))
    assert chi2_pvalue(samples, p) > 1e-3
    assert 0 < sum(accepted) / len(accepted) < K  # accept and reject branches ran


def test_static_sampling_consumes_randomness_like_eager(pairs):
    target, drafts = pairs["llama"]
    for seed in range(4):
        for ids in prompts(2, seed=seed):
            kw = dict(k=3, do_sample=True, temperature=1.0)
            a = speculative_generate(target, drafts["perturbed"], ids, N_NEW, generator=torch.Generator().manual_seed(seed), **kw)
            b = static_speculative_generate(target, drafts["perturbed"], ids, N_NEW, generator=torch.Generator().manual_seed(seed), **kw)
            assert torch.equal(a.sequences, b.sequences) and same_statistics(a, b)
            c = autoregressive_generate(target, ids, N_NEW, do_sample=True, generator=torch.Generator().manual_seed(seed))
            d = static_autoregressive_generate(target, ids, N_NEW, do_sample=True, generator=torch.Generator().manual_seed(seed))
            assert torch.equal(c.sequences, d.sequences)


# --------------------------------------------------------------------------------------------
# Unsupported models are refused by name, before anything runs
# --------------------------------------------------------------------------------------------


def _jetmoe():
    config = JetMoeConfig(vocab_size=96, hidden_size=32, num_hidden_layers=1, num_key_value_heads=2, kv_channels=16,
                          intermediate_size=32, num_local_experts=2, num_experts_per_tok=1, max_position_embeddings=64)
    return JetMoeForCausalLM(config).eval()


def _sliding_qwen2():
    config = Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, use_sliding_window=True, sliding_window=8,
                         max_window_layers=0)
    return Qwen2ForCausalLM(config).eval()


@pytest.mark.parametrize("build,name,reason", [(_jetmoe, "JetMoeForCausalLM", "_can_compile_fullgraph"),
                                               (_sliding_qwen2, "Qwen2ForCausalLM", "StaticSlidingWindowLayer")])
def test_unsupported_model_raises_clear_error(pairs, build, name, reason):
    model = build()
    llama = pairs["llama"][0]
    calls = []
    handles = [m.register_forward_pre_hook(lambda *_: calls.append(1)) for m in (model, llama)]
    ids = torch.tensor([[3, 4, 5]])
    try:
        for role, call in [("model", lambda: fp.check_static_support(model)),
                           ("target", lambda: static_autoregressive_generate(model, ids, 4)),
                           ("target", lambda: static_speculative_generate(model, llama, ids, 4, k=2)),
                           ("draft", lambda: static_speculative_generate(llama, model, ids, 4, k=2, compiled=True))]:
            with pytest.raises(ValueError, match=rf'{role} \({name}\).*{reason}.*backend="eager"'):
                call()
    finally:
        for h in handles:
            h.remove()
    assert calls == []  # refused before any forward


# --------------------------------------------------------------------------------------------
# Compiled backend (torch.compile; CUDA graphs on a GPU)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled_pair():
    """Fresh tiny Llamas (never compiled before) with every step the compiled tests use compiled
    once, here: returns (target, drafts, {step: compile seconds})."""
    target = tiny_model("llama", seed=1)
    drafts = {"copy": tiny_model("llama", seed=1), "perturbed": perturbed_copy(target, 0.3, seed=5),
              "random": tiny_model("llama", seed=2)}
    seconds = {}
    for k in COMPILED_KS:
        seconds[("target", k)] = fp.warmup(target, length=64, k=k)
    for name, draft in drafts.items():
        seconds[(name, None)] = fp.warmup(target, draft, length=64, k=COMPILED_KS[0])
    return target, drafts, seconds


@pytest.mark.slow
def test_compile_once_per_model_and_shape(compiled_pair):
    target, drafts, seconds = compiled_pair
    # every first warm-up compiled something; the second k reused the target's 1-token step
    assert all(s > 0 for s in seconds.values()), seconds
    state = fp._STATE[(id(target), "target")]
    assert sorted(key[:2] for key in state.steps) == [(1, True), (3, False), (5, False)]
    assert all(sorted(key[:2] for key in fp._STATE[(id(d), "draft")].steps) == [(1, True), (2, True)] for d in drafts.values())
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    ids = prompts(1, seed=7)[0]
    for k in COMPILED_KS:
        out = static_speculative_generate(target, drafts["perturbed"], ids, N_NEW, k=k, compiled=True)
        assert out.compile_seconds == 0.0 and out.method == "speculative-compiled"
        assert fp.warmup(target, drafts["perturbed"], length=64, k=k) == 0.0
    out = static_autoregressive_generate(target, ids, N_NEW, compiled=True)
    assert out.compile_seconds == 0.0 and out.method == "autoregressive-compiled"
    assert out.summary()["compile_seconds"] == 0.0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # no recompilation


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["copy", "perturbed", "random"])
def test_compiled_greedy_equals_eager_and_generate(compiled_pair, kind):
    target, drafts, _ = compiled_pair
    for ids in prompts(2):
        ref = hf_greedy(target, ids, N_NEW)
        assert torch.equal(static_autoregressive_generate(target, ids, N_NEW, compiled=True).sequences, ref)
        for k in COMPILED_KS:
            out = static_speculative_generate(target, drafts[kind], ids, N_NEW, k=k, compiled=True)
            assert torch.equal(out.sequences, ref), (kind, k)
            assert same_statistics(out, speculative_generate(target, drafts[kind], ids, N_NEW, k=k))
    # near max_new_tokens the verification is padded to k+1: no new shape, same tokens
    ids = prompts(1, seed=3)[0]
    for n_new in (1, 2, 3, 6):
        out = static_speculative_generate(target, drafts[kind], ids, n_new, k=COMPILED_KS[-1], compiled=True)
        assert torch.equal(out.sequences, hf_greedy(target, ids, n_new)) and out.compile_seconds == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "llama"])
def test_compiled_greedy_other_families(pairs, family):
    """The compiled backend on every tiny family (Llama has its own tests above): target greedy,
    with a draft that is accepted sometimes, at the k_max and below it (padded verification)."""
    target, drafts = pairs[family]
    for ids in prompts(2, seed=1):
        ref = hf_greedy(target, ids, N_NEW)
        assert torch.equal(static_autoregressive_generate(target, ids, N_NEW, compiled=True).sequences, ref)
        out = static_speculative_generate(target, drafts["perturbed"], ids, N_NEW, k=3, compiled=True)
        assert torch.equal(out.sequences, ref) and out.method == "speculative-compiled", family
        assert same_statistics(out, speculative_generate(target, drafts["perturbed"], ids, N_NEW, k=3))
        short = static_speculative_generate(target, drafts["perturbed"], ids, 3, k=3, compiled=True)  # k_i < k_max
        assert torch.equal(short.sequences, hf_greedy(target, ids, 3)) and short.compile_seconds == 0.0
    for model in (target, drafts["perturbed"]):
        fp.release(model)


@pytest.mark.slow
def test_compiled_rollback_logits_equal_fresh_forward(compiled_pair):
    _rollback_check(compiled_pair[0], compiled=True, k=COMPILED_KS[-1])


@pytest.mark.slow
def test_compiled_sampling_consumes_randomness_like_eager(compiled_pair):
    target, drafts, _ = compiled_pair
    for seed, ids in enumerate(prompts(3, seed=9)):
        for k in COMPILED_KS:
            kw = dict(k=k, do_sample=True, temperature=1.0)
            a = speculative_generate(target, drafts["perturbed"], ids, N_NEW, generator=torch.Generator().manual_seed(seed), **kw)
            b = static_speculative_generate(target, drafts["perturbed"], ids, N_NEW, compiled=True,
                                               generator=torch.Generator().manual_seed(seed), **kw)
            assert torch.equal(a.sequences, b.sequences) and same_statistics(a, b)


# --------------------------------------------------------------------------------------------
# Benchmark entry points (structure only: speed claims live in notebooks, never in tests)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_benchmark_backends_tidy_frame(compiled_pair):
    target, drafts, _ = compiled_pair
    ids = prompts(1, seed=2)[0]
    table = bb.benchmark_backends(target, {"perturbed": drafts["perturbed"]}, [ids], ks=(2,), repeats=5,
                                  max_new_tokens=8, min_run_time=0.01)
    assert set(table.measure) == {"compile", "step_latency", "generate"}
    assert (table[table.measure == "compile"].compile_seconds == 0.0).all()  # compiled by the fixture already
    lat = table[table.measure == "step_latency"]
    assert len(lat) == 3 * 3  # backends x (target 1 token, target verify 3 tokens, draft 1 token)
    assert (lat.median_s > 0).all()
    assert lat.loc[(lat.model == "target") & (lat.tokens == 1), "ratio_to_target_step"].eq(1.0).all()
    gen = table[table.measure == "generate"]
    assert len(gen) == 3 * 2 * 5  # backends x (autoregressive, one speculative config) x repeats
    assert gen.identical_to_eager.all() and (gen.new_tokens == 8).all()
    assert {"env_device", "env_torch", "env_commit"} <= set(table.columns)
    runs = bb.generate_runs(table)
    assert len(runs) == len(gen) and set(runs.run) == set(range(5)) and (runs.prompt == 0).all()
    assert (runs.decode_tokens.round() == 7).all()  # 8 new tokens, the first one is TTFT's
    s = paired_speedup(runs, "static/autoregressive", "eager/autoregressive")
    assert s["n_runs"] == 5 and s["speedup"] > 0
    with pytest.raises(ValueError, match="no generate rows"):
        bb.generate_runs(table[table.measure != "generate"])


@pytest.mark.slow
def test_cli_bench_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPECNB_PROFILE", "quick")
    code = bb.main(["bench", "--target", "tiny:llama", "--draft", "copy:noise=0.1", "--k", "2", "--backends", "eager,static",
                    "--max-new-tokens", "6", "--prompt-length", "4", "--output", "fastpath_test"])
    out = capsys.readouterr().out
    assert code == 0 and "decode tokens/s" in out and "rows appended" in out
    assert (tmp_path / "quick" / "results" / "fastpath_test.csv").exists()  # under tmp_path (conftest)
    assert bb.main(["bench", "--target", "tiny:llama", "--k", "0", "--backends", "eager"]) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA graphs); none on this machine")
def test_compiled_cuda_graphs_match_eager():
    """mode="reduce-overhead": greedy and seeded sampling equal the eager loop; rollback exact."""
    target = tiny_model("llama", seed=1, device="cuda")
    draft = perturbed_copy(target, 0.3, seed=5)
    for seed, ids in enumerate(prompts(2)):
        ref = autoregressive_generate(target, ids, N_NEW).sequences
        assert torch.equal(static_autoregressive_generate(target, ids, N_NEW, compiled=True).sequences, ref)
        for k in COMPILED_KS:
            out = static_speculative_generate(target, draft, ids, N_NEW, k=k, compiled=True)
            assert out.sequences.device.type == "cuda" and torch.equal(out.sequences, ref)
            assert same_statistics(out, speculative_generate(target, draft, ids, N_NEW, k=k))
            kw = dict(k=k, do_sample=True)
            a = speculative_generate(target, draft, ids, N_NEW, generator=torch.Generator("cuda").manual_seed(seed), **kw)
            b = static_speculative_generate(target, draft, ids, N_NEW, compiled=True,
                                               generator=torch.Generator("cuda").manual_seed(seed), **kw)
            assert torch.equal(a.sequences, b.sequences) and same_statistics(a, b)
    _rollback_check(target, compiled=True, k=COMPILED_KS[-1])


def test_backend_argument_dispatches_to_the_fast_path(pairs):
    """``speculative_generate(backend=...)`` / ``autoregressive_generate(backend=...)``: one argument
    selects the path; same tokens and statistics, the method name says which ran."""
    target, drafts = pairs["llama"]
    ids = torch.tensor([[3, 4, 5, 6]])
    eager = speculative_generate(target, drafts["perturbed"], ids, 16, k=3)
    static = speculative_generate(target, drafts["perturbed"], ids, 16, k=3, backend="static")
    assert static.method == "speculative-static" and torch.equal(static.sequences, eager.sequences)
    assert (static.accepted, static.target_calls, static.draft_calls) == (eager.accepted, eager.target_calls, eager.draft_calls)
    ar = autoregressive_generate(target, ids, 16, backend="static")
    assert ar.method == "autoregressive-static" and torch.equal(ar.sequences, autoregressive_generate(target, ids, 16).sequences)
    with pytest.raises(ValueError, match="backend must be one of"):
        speculative_generate(target, drafts["perturbed"], ids, 16, k=3, backend="fast")
    # seed 002's sequential verification runs on every backend: same tokens and counts as eager
    seq_eager = speculative_generate(target, drafts["perturbed"], ids, 16, k=3, verify="sequential")
    seq_static = speculative_generate(target, drafts["perturbed"], ids, 16, k=3, backend="static", verify="sequential")
    assert seq_static.method == "speculative-sequential-static" and torch.equal(seq_static.sequences, eager.sequences)
    assert (seq_static.accepted, seq_static.target_calls) == (seq_eager.accepted, seq_eager.target_calls)
