"""specnb.generate: decoding a prompt with a Hugging Face causal LM, with or without a draft.

Modules, bottom up (imports point up this list only):

- ``forward``: one forward over a KV cache (the cache keyword of each transformers release), device sync
- ``result``: ``GenerationResult`` and the statistics read from it (alpha, tau, decode tokens/s)
- ``checks``: input checks that name the fix, before any forward
- ``sampling``: greedy/sampled token choice; speculative sampling's accept/correct rule
- ``static``: preallocated static caches, compiled steps (gpt-fast), model support
- ``packed``: a model's copy with oneDNN-prepacked linear weights (CPU), other tensors shared
- ``steps``: a model's forward at ``input_pos`` with its cache inside; ``backend`` picks the step
- ``drafts``: draft sources behind one interface (``ModelDraft``, draft-free ``PromptLookupDraft``, ``HybridDraft``)
- ``schedules``: how many tokens to draft per iteration (constant, HF heuristic, adaptive)
- ``loops``: ``speculative_decode`` / ``autoregressive_decode`` and their timed wrappers
- ``assisted``: Hugging Face generate (plain, assisted, prompt lookup), instrumented
- ``theory``: Leviathan et al. 2023's expected tokens, speedup, alpha and optimal k
"""

from .assisted import assisted_generate, hf_generate
from .drafts import HybridDraft, ModelDraft, PromptLookupDraft
from .forward import cache_argument, synchronize
from .packed import PackedLinear, packed
from .loops import autoregressive_decode, autoregressive_generate, speculative_decode, speculative_generate
from .result import GenerationResult, judged_tokens
from .schedules import AdaptiveK, ConstantK, HeuristicK, KSchedule
from .steps import BACKENDS, DynamicStep, StaticStep

__all__ = ["GenerationResult", "judged_tokens", "autoregressive_generate", "speculative_generate", "assisted_generate", "hf_generate",
           "autoregressive_decode", "speculative_decode", "ModelDraft", "PromptLookupDraft", "HybridDraft", "DynamicStep", "StaticStep", "BACKENDS",
           "packed", "PackedLinear", "ConstantK", "HeuristicK", "AdaptiveK", "KSchedule", "cache_argument", "synchronize"]
