"""The CUDA paths: device placement, device-side generators, synchronised timing.

These run only where a GPU is present (CI has none; they ran on a lent H100, see the README's
"GPU" note); on CPU they are skipped with that reason. The same invariants as the CPU tests:
greedy speculative output equals the target's own greedy ``generate`` on the device.
"""

import pytest
import torch

from specnb.generate import assisted_generate, autoregressive_generate, speculative_generate
from specnb.models import load_model, perturbed_copy, tiny_model
from specnb.timing import compare, forward_share, step_latency, summarize

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")


@pytest.fixture(scope="module")
def pair():
    target = tiny_model("llama", layers=4, hidden=128, vocab_size=256, init_std=0.1, seed=1, device="cuda")
    return target, perturbed_copy(target, 0.3, seed=5)


def _ids(n: int = 7) -> torch.Tensor:
    return torch.arange(2, 2 + n).unsqueeze(0).cuda()


def test_greedy_identity_on_cuda(pair):
    target, draft = pair
    ids = _ids()
    ref = target.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False, pad_token_id=0)
    assert torch.equal(autoregressive_generate(target, ids, 24).sequences, ref)
    for k in (1, 3, 7):
        out = speculative_generate(target, draft, ids, 24, k=k)
        assert out.sequences.device.type == "cuda" and torch.equal(out.sequences, ref)
    assert torch.equal(assisted_generate(target, draft, ids, 24, k=3).sequences, ref)


def test_packing_leaves_a_gpu_model_as_it_is(pair):
    from specnb.generate import packed

    target, draft = pair
    assert packed(target) is target and packed(draft) is draft  # cuBLAS lays weights out itself


def test_sampling_uses_a_device_generator(pair):
    target, draft = pair
    gen = torch.Generator(device="cuda").manual_seed(0)
    a = speculative_generate(target, draft, _ids(), 16, k=3, do_sample=True, generator=gen).sequences
    gen = torch.Generator(device="cuda").manual_seed(0)
    b = speculative_generate(target, draft, _ids(), 16, k=3, do_sample=True, generator=gen).sequences
    assert torch.equal(a, b)  # seeded on the device: reproducible


def test_timing_syncs_and_attributes(pair):
    target, draft = pair
    lat = step_latency(target, context=32, min_run_time=0.05)
    assert lat["median_s"] > 0
    runs = compare({"ar": lambda: autoregressive_generate(target, _ids(), 16),
                    "spec": lambda: speculative_generate(target, draft, _ids(), 16, k=3)}, repeats=5, warmup=1, device="cuda", progress=False)
    table = summarize(runs, baseline="ar")
    assert set(table["method"]) == {"ar", "spec"} and (table["tokens_per_second_median"] > 0).all()
    share = forward_share(lambda: speculative_generate(target, draft, _ids(), 16, k=3), {"t": target, "d": draft}, device="cuda")
    assert 0 <= share["outside_share"] < 1


def test_load_model_places_and_casts(tmp_path):
    tiny_model("llama", layers=2, hidden=64, vocab_size=128).save_pretrained(tmp_path / "m")
    m = load_model(str(tmp_path / "m"))
    assert m.device.type == "cuda" and m.dtype == torch.bfloat16  # the defaults on a GPU
    m32 = load_model(str(tmp_path / "m"), dtype=torch.float32, device="cpu")
    assert m32.device.type == "cpu" and m32.dtype == torch.float32
