"""The graph LangGraph Studio and `langgraph dev` serve (``langgraph.json`` at the repository
root points here): SMCS on the embedded default, i.e. the local pool started on 127.0.0.1 and
the default bank (built in the cache on first use).

Importing this module starts the local model servers and opens the bank, so import it only
where the graph is served. The graph is compiled without a checkpointer: the LangGraph server
brings its own. Its input is ``{"question": "..."}`` or ``{"messages": [...]}``; each node's
state update streams in Studio, and progress events arrive on the ``custom`` stream.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedder is a local file; never ask the hub

from smcs_graph.embedded.default import default_graph

graph = default_graph()
