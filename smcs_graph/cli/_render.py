"""Human-readable summaries of an SMCS run (shared by `smcs ask` and the demo)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def render_progress(event: Mapping[str, Any]) -> str:
    """One line for a `custom`-stream progress event."""
    if event.get("stage") == "referencer" and event.get("ok") and "preview" in event:
        return (
            f"  [referencer] {event['model']} (prior rank {event['rank'] + 1}) answered, "
            f"{event['output_tokens']} tokens in {event['seconds']} s: {event['preview']!r}"
        )
    details = ", ".join(f"{k}={v}" for k, v in event.items() if k not in {"stage", "totals"})
    return f"  [{event['stage']}] {details}"


def render_trace(trace: Mapping[str, Any], answer: str) -> str:
    """Which models were picked and why, each reference, each candidate's scores, the winner."""
    lines = ["Prior selection"]
    lines.append(
        f"  support set: {trace['support_size']} of {trace['bank_size']} bank questions "
        f"(similarity >= {trace['threshold']:.3f})"
    )
    for example in trace["support_examples"][:3]:
        first_line = next(
            (line.strip() for line in example["question"].splitlines() if line.strip()), ""
        )[:100]
        lines.append(f"    {example['similarity']:.3f}  [{example['family']}] {first_line}")
    for name, prior in sorted(trace["priors"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  prior {name}: {prior:.3f}")
    lines.append(
        f"  referencers: {', '.join(trace['referencers'])}; aggregator: {trace['aggregator']}"
    )
    gate = trace.get("gate")
    if gate:  # adaptive collaboration: why the run answered alone or collaborated
        lines.append(f"  gate: {gate.get('reason', gate.get('decision'))}")
    lines.extend(f"  note: {note}" for note in trace["notes"])
    lines.append("\nReferences")
    for ref in trace["references"]:
        lines.append(f"  {ref['model']}: {ref['text'][:200]!r}")
    for failure in trace["failures"]:
        lines.append(f"  FAILED {failure['stage']} {failure['model']}: {failure['error']}")
    lines.extend(f"  {_recovery_line(r)}" for r in trace.get("recoveries") or [])
    lines.append("\nCandidates (similarity + lambda * (1 - perplexity) = total)")
    for cand in trace["candidates"]:
        mark = "*" if cand["chosen"] else " "
        ppl = "n/a" if cand["perplexity"] is None else f"{cand['perplexity']:.3f}"
        lines.append(
            f" {mark}#{cand['index']} subset={cand['subset']} sim={cand['similarity']:.3f} "
            f"ppl={ppl} total={cand['total']}: {cand['text'][:120]!r}"
        )
    lines.extend(f"  warning: {w}" for w in trace["warnings"])
    usage = trace["usage"]
    seconds = trace.get("seconds")
    lines.append(f"\nAnswer: {answer}")
    lines.append(
        f"\n{len(trace['calls'])} model calls, {usage['input_tokens']} input + "
        f"{usage['output_tokens']} output tokens, cost {trace['cost']:.6f}"
        + (f", {seconds:.1f}s" if seconds is not None else "")
    )
    return "\n".join(lines)


def _recovery_line(recovery: Mapping[str, Any]) -> str:
    """One reply without its final answer (cut off, or ended without one) and what its
    follow-up did."""
    what = "reference" if recovery["stage"] == "referencer" else f"fusion #{recovery['index']}"
    limit = recovery.get("max_tokens")
    hit = f"hit {limit} tokens" if limit is not None else "hit its token limit"
    if not recovery.get("cut", True):
        hit = "ended without a final answer"
    if recovery.get("answered"):
        outcome = f"recovered: {' '.join(recovery['ending'].split())}"
    elif recovery.get("ending"):
        outcome = "the recovery follow-up found no final answer"
    else:
        outcome = "the recovery follow-up failed (the reply is kept as it was)"
    return f"{recovery['model']}'s {what} {hit}; {outcome}"
