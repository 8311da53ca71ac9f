"""smcs-graph: SMCS multi-LLM collaboration as a LangGraph plugin.

Public surface:

- `build_graph(pool, bank, embedder, config)`: the SMCS `StateGraph` (uncompiled).
- `SMCSChatModel(pool=..., bank=...)`: the graph as a drop-in LangChain chat model.
- `SMCSConfig`: settings with the paper's defaults (the graph's context schema).
- `Pool` / `PoolModel`: named chat models (from a YAML/JSON file or given directly).
- `QuestionBank`, `BankQuestion`: the Chroma-backed bank and its capability matrix.
- `SentenceTransformerEmbedder`, `HashingEmbedder`: embedders (real MiniLM; a test fake).
"""

from smcs_graph.bank import BankQuestion, QuestionBank, Support
from smcs_graph.chat_model import SMCSChatModel
from smcs_graph.config import SMCSConfig
from smcs_graph.embedder import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from smcs_graph.errors import (
    BankError,
    ConfigError,
    EmbedderMismatchError,
    InvalidQuestionError,
    SMCSError,
)
from smcs_graph.graph import build_graph
from smcs_graph.models import Pool, PoolModel
from smcs_graph.nodes import PerplexityUnavailableWarning

__all__ = [
    "BankError",
    "BankQuestion",
    "ConfigError",
    "Embedder",
    "EmbedderMismatchError",
    "HashingEmbedder",
    "InvalidQuestionError",
    "PerplexityUnavailableWarning",
    "Pool",
    "PoolModel",
    "QuestionBank",
    "SMCSChatModel",
    "SMCSConfig",
    "SMCSError",
    "SentenceTransformerEmbedder",
    "Support",
    "build_graph",
]

__version__ = "0.1.0"
