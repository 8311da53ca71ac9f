"""Prompt wording of the aggregation step (the project's own words, Mixture-of-Agents style)."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import AnyMessage, BaseMessage, SystemMessage

from smcs_graph._input import message_text

AGGREGATION_INSTRUCTIONS = (
    "You will see several candidate responses to the user's latest message, written by "
    "different assistants. Some may be wrong, incomplete, biased or badly reasoned. Examine "
    "them critically: keep what is correct, repair what is not, and resolve disagreements by "
    "reasoning about the question yourself. Then write one accurate, complete and "
    "well-structured response to the user in your own words. Do not copy a candidate blindly, "
    "do not mention the candidates, and follow any format the user asked for."
)


def aggregation_messages(
    conversation: Sequence[AnyMessage], references: Sequence[str]
) -> list[BaseMessage]:
    """The aggregator's input: candidates numbered in the system message, then the conversation.

    A system message already at the head of the conversation is merged into ours, because
    several chat templates accept only one system message, at the start.
    """
    numbered = "\n\n".join(
        f"Candidate {i}:\n{text.strip()}" for i, text in enumerate(references, start=1)
    )
    system = f"{AGGREGATION_INSTRUCTIONS}\n\nCandidate responses:\n\n{numbered}"
    rest = list(conversation)
    if rest and isinstance(rest[0], SystemMessage):
        system = f"{message_text(rest[0])}\n\n{system}"
        rest = rest[1:]
    return [SystemMessage(system), *rest]
