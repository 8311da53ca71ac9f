"""What a profiling run did, per model (`ModelTally`), and its report (`ProfileReport`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ModelTally", "ProfileReport"]

_ERRORS_KEPT = 5  # error messages kept per model for the report


@dataclass
class ModelTally:
    """What profiling did for one model in one run."""

    pending: int = 0
    """Questions without a result for this model when the run started."""
    recorded: int = 0
    """Graded results written to the bank."""
    correct: int = 0
    cached: int = 0
    """Responses taken from the cache instead of calling the model."""
    calls: int = 0
    """Successful model calls (each one paid for), recovery follow-ups included."""
    hit_limit: int = 0
    """Replies (calls made in this run, not cached ones) that stopped at their token limit."""
    recoveries: int = 0
    """Follow-up calls that finished a reply cut off before its final answer."""
    retries: int = 0
    failures: int = 0
    """Questions left unanswered after retries (still masked; a rerun tries them again)."""
    grading_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    abandoned: bool = False
    """Given up after too many consecutive failures."""
    errors: list[str] = field(default_factory=list)
    prompt_digests: dict[str, str] = field(default_factory=dict)
    """Per family asked in this run, the model prompt its answers were asked with
    (`models.prompts.prompt_digest`; "" for the default)."""

    @property
    def failed(self) -> bool:
        return self.abandoned or self.failures > 0 or self.grading_errors > 0

    def note(self, message: str) -> None:
        if len(self.errors) < _ERRORS_KEPT:
            self.errors.append(message)


@dataclass
class ProfileReport:
    """The outcome of one profiling run, per model."""

    models: dict[str, ModelTally]
    seconds: float
    cache_path: Path | None
    skipped: dict[str, str] = field(default_factory=dict)
    """Questions no model was asked, with the reason (no gradable record, no grader)."""
    prompt_record: Path | None = None
    """The cell prompt record file (`profiling.prompts`; None: kept in this process)."""

    @property
    def failed(self) -> list[str]:
        """Models with questions left unanswered or ungraded in this run."""
        return [name for name, tally in self.models.items() if tally.failed]

    @property
    def answers(self) -> int:
        return sum(t.recorded for t in self.models.values())

    def summary(self) -> str:
        """A human-readable table, one line per model, then the failures."""
        lines = [
            f"profiled {len(self.models)} model(s): {self.answers} result(s) recorded in "
            f"{self.seconds:.1f}s"
            + (f" ({self.answers / self.seconds:.2f}/s)" if self.seconds > 0 else "")
        ]
        for name, t in self.models.items():
            acc = f"{t.correct / t.recorded:.3f}" if t.recorded else "n/a"
            lines.append(
                f"  {name}: {t.recorded}/{t.pending} recorded, accuracy {acc}, {t.calls} calls "
                f"({t.cached} cached, {t.retries} retries, {t.hit_limit} at the token limit, "
                f"{t.recoveries} recovered), {t.input_tokens} in + "
                f"{t.output_tokens} out tokens, cost {t.cost:.6f}"
            )
            own = {f: d for f, d in t.prompt_digests.items() if d}
            if own:
                lines.append(
                    "    model prompt: " + ", ".join(f"{f} {d}" for f, d in sorted(own.items()))
                )
        if self.skipped:
            few = "; ".join(f"{i}: {why}" for i, why in list(self.skipped.items())[:3])
            lines.append(f"  skipped {len(self.skipped)} ungradable question(s): {few}")
        for name, t in self.models.items():
            if t.failed:
                what = "given up after repeated failures" if t.abandoned else "failures"
                lines.append(
                    f"  FAILED {name}: {what}; {t.failures} unanswered, {t.grading_errors} "
                    f"grading error(s): {'; '.join(t.errors)}"
                )
        return "\n".join(lines)
