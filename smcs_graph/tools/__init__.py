"""LangChain tools over SMCS, for agents that keep their own model.

- `make_consult_tool(model_or_graph)` / `SMCSConsultTool`: ask the whole ensemble a hard
  sub-question and get its answer back (the trace rides along as the tool message's artifact).
- `make_rank_models_tool(pool, bank, embedder, config)`: prior selection alone: which pool
  models suit a question, with their priors and support-question counts (no generation).
"""

from smcs_graph.tools.consult import ConsultInput, SMCSConsultTool, make_consult_tool
from smcs_graph.tools.rank import RankModelsInput, RankModelsTool, make_rank_models_tool

__all__ = [
    "ConsultInput",
    "RankModelsInput",
    "RankModelsTool",
    "SMCSConsultTool",
    "make_consult_tool",
    "make_rank_models_tool",
]
