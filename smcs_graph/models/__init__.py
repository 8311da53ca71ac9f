"""The pool of chat models SMCS draws on.

- `pool`: `Pool` / `PoolModel`, named chat models built from a pool file or given directly;
  `read_pool_file` / `load_pool_file`, the one parser of pool files (the models and their
  `smcs:` settings).
- `local`: the local GGUF models shipped in PyPI packages, served by llama.cpp on 127.0.0.1
  (registry, files, server, manager, replicas).
"""

from smcs_graph.models.pool import Pool, PoolFile, PoolModel, load_pool_file, read_pool_file

__all__ = ["Pool", "PoolFile", "PoolModel", "load_pool_file", "read_pool_file"]
