"""LangChain tools over SMCS, for agents that keep their own model.

- `make_consult_tool(model_or_graph)` / `SMCSConsultTool`: ask the whole ensemble a hard
  sub-question and get its answer back (the trace, with the run's id, rides along as the tool
  message's artifact; `include_run_id=True` shows the id to the agent).
- `make_rank_models_tool(pool, bank, embedder, config)`: prior selection alone: which pool
  models suit a question, with their priors and support-question counts (no generation).
- `make_feedback_tool(model_or_bank)` / `SMCSFeedbackTool`: report a consultation's outcome (a
  gold answer or a verdict) by its run id; the bank gains the judged cells.
"""

from smcs_graph.tools.consult import ConsultInput, SMCSConsultTool, make_consult_tool
from smcs_graph.tools.feedback import FeedbackInput, SMCSFeedbackTool, make_feedback_tool
from smcs_graph.tools.rank import RankModelsInput, RankModelsTool, make_rank_models_tool

__all__ = [
    "ConsultInput",
    "FeedbackInput",
    "RankModelsInput",
    "RankModelsTool",
    "SMCSConsultTool",
    "SMCSFeedbackTool",
    "make_consult_tool",
    "make_feedback_tool",
    "make_rank_models_tool",
]
