"""The rule that keeps every node on one provider token (engine.apns.sharedtoken, apns.md §2)."""

from __future__ import annotations

import pytest

from engine.apns.auth import ProviderToken, SigningKey
from engine.apns.sharedtoken import Adopt, Issue, Publish, StoredToken, plan

KEY = SigningKey.generate("ABC123DEFG", "TEAM123456")
T0 = 1_700_000_000
MAX_AGE = 3000.0


def token(at: int) -> ProviderToken:
    return ProviderToken.issue(KEY, at)


def stored(t: ProviderToken) -> StoredToken:
    return StoredToken(t.value, t.issued_at)


def test_a_fresh_stored_token_is_adopted_and_comes_back_as_the_same_token() -> None:
    shared = token(T0)
    decision = plan(stored(shared), token(T0 + 5), now=T0 + 2999, max_age=MAX_AGE)
    assert decision == Adopt(stored(shared))
    assert decision.stored.token(KEY.key_id, KEY.team_id) == shared
    # A token from a node whose clock runs ahead is fresh too (negative age).
    ahead = token(T0 + 30)
    assert plan(stored(ahead), None, now=T0, max_age=MAX_AGE) == Adopt(stored(ahead))


@pytest.mark.parametrize("mine", [None, "same", "stale"])
def test_nothing_fresh_anywhere_issues(mine: str | None) -> None:
    shared = token(T0)
    ours = {None: None, "same": shared, "stale": token(T0 - 10)}[mine]
    assert plan(stored(shared), ours, now=T0 + 3000, max_age=MAX_AGE) == Issue()
    assert plan(None, ours, now=T0 + 3000, max_age=MAX_AGE) == Issue()


def test_our_own_fresh_token_is_published_when_the_stored_one_is_missing_or_stale() -> None:
    ours = token(T0 + 3000)  # issued by this node while the database was away
    assert plan(None, ours, now=T0 + 3001, max_age=MAX_AGE) == Publish(ours)
    assert plan(stored(token(T0)), ours, now=T0 + 3001, max_age=MAX_AGE) == Publish(ours)


def test_a_forced_refresh_replaces_the_stored_token_only_while_it_is_the_failed_one() -> None:
    failed = token(T0)
    # First reporter: the stored token is the failed one, ours too: issue.
    assert plan(stored(failed), failed, now=T0 + 60, max_age=MAX_AGE, failed=failed) == Issue()
    # A later reporter: someone already replaced it: adopt, whatever its own token.
    newer = token(T0 + 60)
    assert plan(stored(newer), failed, now=T0 + 61, max_age=MAX_AGE, failed=failed) == Adopt(
        stored(newer)
    )
    # Our own token is not the failed one and the stored one is: publish ours.
    mine = token(T0 + 30)
    assert plan(stored(failed), mine, now=T0 + 61, max_age=MAX_AGE, failed=failed) == Publish(mine)


def test_the_stored_value_stays_out_of_reprs() -> None:
    shared = token(T0)
    assert shared.value not in repr(stored(shared))
    assert shared.value not in repr(Adopt(stored(shared)))
