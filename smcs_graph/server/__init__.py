"""An OpenAI-compatible HTTP server over `SMCSChatModel` (`smcs serve`).

Read top to bottom, as a request flows:

- `settings`: `ServerSettings`, how requests are admitted and answered;
- `request`: the OpenAI chat completion body validated into a `ChatRequest` (or a 400/404);
- `admission`: runs at once, the queue, 429 beyond it, each run's deadline (504);
- `response`: the completion body and its server-sent-event stream;
- `errors`: `APIError` in OpenAI's shape, and how a failed run maps onto one;
- `app`: the Starlette routes tying them together (`create_app`), and uvicorn (`run_server`).
"""

from smcs_graph.server.app import create_app, run_server
from smcs_graph.server.errors import APIError
from smcs_graph.server.settings import ServerSettings

__all__ = ["APIError", "ServerSettings", "create_app", "run_server"]
