"""specnb: a research workbook on speculative decoding, as a tested, importable package.

Folders are concerns and imports point one way: ``generate`` (decoding loops, steps, sampling,
schedules, theory) ← ``bench``-level modules (``timing``, ``latency``, ``planner``, ``measure``)
← ``zoo``, ``pruning``, ``timeseries`` ← the notebooks. Shared pieces: ``atomic`` (atomic
writes), ``paths``, ``results`` (tidy CSV), ``plotting``, ``models``, ``stack`` (the lock).
"""

from .generate import GenerationResult, HybridDraft, PromptLookupDraft, assisted_generate, autoregressive_generate, speculative_generate

__version__ = "0.1.0"

__all__ = ["GenerationResult", "PromptLookupDraft", "HybridDraft", "autoregressive_generate", "speculative_generate", "assisted_generate", "__version__"]
