"""The embedded default: everything SMCS needs on one small CPU machine, offline.

- `default`: the local pool, its settings, the default bank on disk and the compiled graph
  (`python -m smcs_graph.embedded profile` reproduces the committed capability matrix).
- `default_bank`: the default bank's questions (from installed packages and frozen items).
- `studio`: the module-level graph that `langgraph.json` serves to LangGraph Studio.
"""

from smcs_graph.embedded.default import default_graph, local_config, local_pool, open_default_bank

__all__ = ["default_graph", "local_config", "local_pool", "open_default_bank"]
