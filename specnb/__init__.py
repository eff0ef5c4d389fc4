"""specnb: a research workbook on speculative decoding, as a tested, importable package.

Modules, one concern each: ``decoding`` (autoregressive, speculative, HF assisted loops),
``timing`` (honest measurement), ``theory`` (Leviathan et al. 2023), ``models`` (construction and
loading), ``results`` (tidy CSV), ``plotting`` (figures), ``paths`` (where things live).
"""

from .decoding import GenerationResult, assisted_generate, autoregressive_generate, speculative_generate

__version__ = "0.1.0"

__all__ = ["GenerationResult", "autoregressive_generate", "speculative_generate", "assisted_generate", "__version__"]
