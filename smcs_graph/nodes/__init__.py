"""One module per graph node. Each is thin: read state and the run's settings, call core and
services (`selection`, the pool, the embedder); nodes never import each other.

`graph.build_graph` wires them: `make_<node>(services)` builds a node over the services, and
`send_referencers` / `send_aggregations` are the two fan-outs (the second also follows `score`
when it fails over to the next aggregator). `cancel_calls_on_interrupt()` makes Ctrl-C cancel
the model calls in flight of a sync run.
"""

from smcs_graph.nodes._common import Services
from smcs_graph.nodes._deadline import cancel_calls_on_interrupt
from smcs_graph.nodes.aggregate import make_aggregate
from smcs_graph.nodes.drop_subsets import make_drop_subsets, send_aggregations
from smcs_graph.nodes.referencer import make_referencer
from smcs_graph.nodes.score import PerplexityUnavailableWarning, make_score
from smcs_graph.nodes.select_priors import make_select_priors, send_referencers

__all__ = [
    "PerplexityUnavailableWarning",
    "Services",
    "cancel_calls_on_interrupt",
    "make_aggregate",
    "make_drop_subsets",
    "make_referencer",
    "make_score",
    "make_select_priors",
    "send_aggregations",
    "send_referencers",
]
