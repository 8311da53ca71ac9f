"""SMCS inside LangChain v1 agents: a routing middleware and a decision model.

- `middleware`: `SMCSRouterMiddleware` routes an agent's model calls over a pool by the bank's
  priors (`route`), runs the ensemble (`ensemble`), or escalates to it when the priors are
  unsure (`escalate`); the agent state's `smcs_routing` records each call;
- `decision`: `SMCSDecisionModel`, prior selection as a `BaseDecisionModel`, for the stock
  `ModelRouterMiddleware`;
- `routing`: what both share: a question's priors, their probabilities, the prior gate.
"""

from smcs_graph.agents.decision import SMCSDecisionModel
from smcs_graph.agents.middleware import (
    ENSEMBLE,
    RouterMode,
    SMCSRouterMiddleware,
    SMCSRoutingState,
)
from smcs_graph.agents.routing import PriorGate, RoutePriors, route_priors

__all__ = [
    "ENSEMBLE",
    "PriorGate",
    "RoutePriors",
    "RouterMode",
    "SMCSDecisionModel",
    "SMCSRouterMiddleware",
    "SMCSRoutingState",
    "route_priors",
]
