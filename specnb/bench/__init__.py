"""specnb.bench: measuring decoding.

- ``backends``: eager vs static vs compiled, step latency and interleaved tokens/s
  (``python -m specnb.bench.backends bench``)
"""
