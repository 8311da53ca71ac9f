"""`smcs ask` reads long questions from standard input or a file, with clear errors."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from smcs_graph.cli import main
from smcs_graph.cli.ask import MAX_QUESTION_BYTES, read_question
from smcs_graph.errors import ConfigError, InvalidQuestionError


def test_the_argument_is_the_question() -> None:
    assert read_question("What is 2 plus 2?", None) == "What is 2 plus 2?"


def test_a_200_kb_question_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "Summarise: " + "lorem ipsum " * 17_000  # about 200 KB
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert read_question("-", None) == text


def test_a_question_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "q.txt"
    path.write_bytes("\ufeffWhich planet is largest?\n".encode())
    assert read_question(None, str(path)) == "Which planet is largest?\n"


def test_bad_question_files_name_the_file(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Qu'est-ce que la géométrie ?".encode("latin-1"))
    with pytest.raises(InvalidQuestionError, match=r"latin1\.txt is not UTF-8.*save it as UTF-8"):
        read_question(None, str(latin1))
    with pytest.raises(ConfigError, match=r"cannot read question file .*missing\.txt"):
        read_question(None, str(tmp_path / "missing.txt"))
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"x" * (MAX_QUESTION_BYTES + 1))
    with pytest.raises(InvalidQuestionError, match="over 1,000,000 bytes"):
        read_question(None, str(huge))


def test_no_question_or_two_questions_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="no question"):
        read_question(None, None)
    with pytest.raises(ConfigError, match="not both"):
        read_question("hi", str(tmp_path / "q.txt"))
    # through the command line: exit 2 and a message, before any pool starts
    assert main(["ask", "--pool", "nowhere.yaml"]) == 2
    assert "no question" in capsys.readouterr().err
