"""Bad input raises a ValueError that says what to change, before any forward pass runs."""

import pytest
import torch

from specnb.generate import assisted_generate, autoregressive_generate, speculative_generate
from specnb.models import tiny_model

IDS = torch.tensor([[3, 4, 5]])


@pytest.fixture(scope="module")
def models():
    return tiny_model("llama", seed=1, max_positions=64), tiny_model("llama", seed=2, max_positions=64)


@pytest.fixture
def counted(models):
    calls = []
    handles = [m.register_forward_pre_hook(lambda *_: calls.append(1)) for m in models]
    yield models, calls
    for h in handles:
        h.remove()


CASES = [
    (dict(k=0), "k"),
    (dict(k=-2), "k"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(ids=torch.tensor([[3, 4], [5, 6]])), "batch size must be 1"),
    (dict(ids=torch.tensor([3, 4, 5])), "shape"),
    (dict(ids=torch.zeros((1, 0), dtype=torch.long)), "empty"),
    (dict(ids=torch.tensor([[3.0, 4.0]])), "integer"),
    (dict(ids=torch.tensor([[3, 400]])), "vocabulary"),
    (dict(max_new_tokens=62), "positions"),
    (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(do_sample=True, temperature=-1.0), "temperature"),
    (dict(verify="batched"), "verify"),
]


@pytest.mark.parametrize("change,message", CASES)
def test_bad_input_raises_before_running(counted, change, message):
    (target, draft), calls = counted
    kwargs = dict(k=3, do_sample=False, temperature=1.0)
    ids, n = change.pop("ids", IDS), change.pop("max_new_tokens", 8)
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        speculative_generate(target, draft, ids, n, **kwargs)
    if "verify" not in change:
        kwargs.pop("verify", None)
        with pytest.raises(ValueError, match=message):
            assisted_generate(target, draft, ids, n, **kwargs)
        if "k" not in change:
            kwargs.pop("k")
            with pytest.raises(ValueError, match=message):
                autoregressive_generate(target, ids, n, **kwargs)
    assert calls == []  # nothing ran


def test_vocab_mismatch(counted):
    (target, _), calls = counted
    other = tiny_model("llama", vocab_size=50, seed=3)
    with pytest.raises(ValueError, match="vocabularies differ"):
        speculative_generate(target, other, IDS, 5, k=2)
    with pytest.raises(ValueError, match="vocabularies differ"):
        assisted_generate(target, other, IDS, 5, k=2)
    assert calls == []


def test_model_without_usable_cache(counted):
    (target, _), calls = counted
    with pytest.raises(ValueError, match="causal LM"):
        speculative_generate(target, torch.nn.Linear(4, 4), IDS, 5, k=2)
    from transformers import T5Config, T5ForConditionalGeneration

    t5 = T5ForConditionalGeneration(T5Config(vocab_size=96, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8))
    with pytest.raises(ValueError, match="encoder-decoder"):
        speculative_generate(target, t5, IDS, 5, k=2)

    class RwkvLikeForCausalLM(type(target)):  # a class HF itself marks as having no DynamicCache
        pass

    cacheless = RwkvLikeForCausalLM(target.config)
    with pytest.raises(ValueError, match="KV cache"):
        speculative_generate(cacheless, target, IDS, 5, k=2)
    assert calls == []


def test_generator_on_wrong_device(models):
    target, draft = models
    if not torch.cuda.is_available():
        pytest.skip("needs a second device type")
    with pytest.raises(ValueError, match="generator"):
        speculative_generate(target, draft, IDS, 5, k=2, do_sample=True, generator=torch.Generator(device="cuda"))
