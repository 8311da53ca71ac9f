"""The OpenAI-compatible app that `langgraph dev` mounts beside the Studio graph.

``langgraph.json`` names it as ``http.app``, so one ``langgraph dev`` serves Studio, the
LangGraph API and ``/v1/chat/completions`` (with ``/v1/models`` and ``/health``): the same
`create_app` as ``smcs serve``, over SMCS on the embedded default (the local pool and the
default bank, with the settings that fit them). Set ``SMCS_API_KEY`` to require
``Authorization: Bearer <key>`` on the ``/v1`` routes.

Importing this module starts the local model servers and opens the bank (as
`smcs_graph.embedded.studio` does), so import it only where the app is served.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedder is a local file; never ask the hub

from starlette.applications import Starlette

from smcs_graph.chat_model import SMCSChatModel
from smcs_graph.embedded.default import local_config, local_pool, open_default_bank
from smcs_graph.server import ServerSettings, create_app


def _app() -> Starlette:
    bank = open_default_bank(progress=False)
    model = SMCSChatModel(
        pool=local_pool(), bank=bank, embedder=bank.embedder, config=local_config()
    )
    return create_app(model, ServerSettings(api_key=os.environ.get("SMCS_API_KEY") or None))


app = _app()
