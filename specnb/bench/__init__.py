"""specnb.bench: measuring decoding.

- ``backends``: eager vs static vs compiled, step latency and interleaved tokens/s
  (``python -m specnb.bench.backends bench``)
- ``peers``: decoders side by side, prompt by prompt, in interleaved runs (``interleaved_runs``)
- ``headline``: notebooks 00-05's headline runs and their verdict rows (CI, n, distinct-4)
"""
