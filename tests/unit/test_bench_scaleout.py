"""The scale-out scenario's bookkeeping: which calls may be a stream's last (calls of one stream
overlap when the server falls behind), and the commit of a linked worktree on its result lines."""

from __future__ import annotations

from pathlib import Path

from bench.harness.core import source_revision
from bench.harness.finals import Ledger
from bench.harness.loadgen import CallResult


def _call(ledger: Ledger, key: str, sent: float, done: float, status: int = 200) -> int:
    value = ledger.next_value()
    ledger.add(key, value, CallResult(sent, sent, done, status, None))
    return value


def test_a_call_ended_before_another_began_cannot_be_last() -> None:
    ledger = Ledger()
    first = _call(ledger, "a", 1.0, 2.0)
    second = _call(ledger, "a", 3.0, 4.0)
    assert ledger.finals("a") == {second: 3.0}
    assert first not in ledger.finals("a")


def test_overlapping_calls_may_each_be_last() -> None:
    ledger = Ledger()
    first = _call(ledger, "a", 1.0, 5.0)
    second = _call(ledger, "a", 2.0, 3.0)
    assert set(ledger.finals("a")) == {first, second}


def test_an_unanswered_call_may_be_last_and_a_refused_one_not() -> None:
    ledger = Ledger()
    answered = _call(ledger, "a", 1.0, 2.0)
    refused = _call(ledger, "a", 3.0, 4.0, status=503)
    unanswered = _call(ledger, "a", 5.0, 0.0, status=0)
    never_sent = _call(ledger, "a", 0.0, 0.0, status=0)
    finals = ledger.finals("a")
    assert unanswered in finals and answered in finals
    assert refused not in finals and never_sent not in finals
    assert ledger.finals("b") == {}


def test_the_commit_of_a_linked_worktree(tmp_path: Path) -> None:
    main = tmp_path / "repo" / ".git"
    (main / "refs" / "heads").mkdir(parents=True)
    (main / "refs" / "heads" / "topic").write_text("a" * 40 + "\n")
    own = main / "worktrees" / "wt"
    own.mkdir(parents=True)
    (own / "HEAD").write_text("ref: refs/heads/topic\n")
    (own / "commondir").write_text("../..\n")
    tree = tmp_path / "wt"
    (tree / "bench").mkdir(parents=True)
    (tree / ".git").write_text(f"gitdir: {own}\n")
    assert source_revision(tree / "bench") == "a" * 40
    (own / "HEAD").write_text("b" * 40 + "\n")  # detached
    assert source_revision(tree / "bench") == "b" * 40
    (tree / ".git").write_text("not a pointer\n")
    assert source_revision(tree / "bench") is None
