"""The question bank: questions, their embeddings and the capability matrix (which model
answered which question correctly), stored in Chroma with our own vectors.

Read top to bottom, as a query flows:

- `store`: `QuestionBank`, the facade: open, write, read, retrieve;
- `collection`: the Chroma collection: clients, creation, layout and embedder checks;
- `records`: `BankQuestion`, `Support`, and a question's layout as a Chroma record;
- `writes`: adding questions and recording results;
- `snapshot`: the in-process copy (embedding matrix, capability matrix) that reads use;
- `retrieval`: support sets (RPS step 2) from a snapshot;
- `index`: `VectorIndex`, the exact int8/float32 nearest-neighbour search of large banks;
- `calibration`: which first pass (int8 or float32) `index` uses on this host, measured once;
- `importer`: build a bank from recorded results without calling a model.
"""

from smcs_graph.bank.collection import DEFAULT_NAME
from smcs_graph.bank.index import VectorIndex
from smcs_graph.bank.records import SCHEMA_VERSION, BankQuestion, Support
from smcs_graph.bank.store import QuestionBank

__all__ = [
    "DEFAULT_NAME",
    "SCHEMA_VERSION",
    "BankQuestion",
    "QuestionBank",
    "Support",
    "VectorIndex",
]
