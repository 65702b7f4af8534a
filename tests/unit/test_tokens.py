"""The shared provider-token cache (engine.apns.tokens, apns.md §2)."""

from __future__ import annotations

import pytest

from engine.apns.auth import ProviderToken, SigningKey, decode_token, verify_token
from engine.apns.tokens import TokenSource, fallback_age

KEY = SigningKey.generate("ABC123DEFG", "TEAM123456")
T0 = 1_700_000_000.75


class FakeClock:
    """A wall clock the test moves by hand; counts reads so laziness can be checked."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def source(clock: FakeClock) -> TokenSource:
    return TokenSource(KEY, wall_clock=clock)


def test_first_token_is_issued_lazily(clock: FakeClock, source: TokenSource) -> None:
    assert clock.reads == 0
    assert source.cached is None
    assert source.generation == 0
    assert source.age() is None
    token = source.current()
    assert source.cached is token
    assert source.generation == 1
    assert source.refreshes == 0
    assert token.issued_at == int(T0)


def test_token_verifies_with_the_right_claims(source: TokenSource) -> None:
    token = source.current()
    decoded = decode_token(token.value)
    assert verify_token(decoded, KEY.public_key)
    assert decoded.header == {"alg": "ES256", "kid": "ABC123DEFG"}
    assert decoded.claims == {"iss": "TEAM123456", "iat": 1_700_000_000}
    assert (token.key_id, token.team_id) == ("ABC123DEFG", "TEAM123456")


def test_reused_within_max_age(clock: FakeClock, source: TokenSource) -> None:
    first = source.current()
    for step in (1.0, 1000.0, 2999.0):
        clock.now = first.issued_at + step
        assert source.current() is first
    assert source.generation == 1
    assert source.age() == pytest.approx(2999.0)


def test_refreshed_at_max_age(clock: FakeClock, source: TokenSource) -> None:
    first = source.current()
    clock.now = first.issued_at + 3000.0
    second = source.current()
    assert second is not first
    assert second.issued_at == first.issued_at + 3000
    assert (source.generation, source.refreshes, source.forced_refreshes) == (2, 1, 0)
    assert source.current() is second  # age is back to 0: one refresh per generation


def test_custom_max_age(clock: FakeClock) -> None:
    source = TokenSource(KEY, wall_clock=clock, max_age=60.0, min_refresh=30.0)
    first = source.current()
    clock.now += 59.0
    assert source.current() is first
    clock.now += 1.0
    assert source.current() is not first


def test_clock_going_backwards_does_not_refresh(clock: FakeClock, source: TokenSource) -> None:
    first = source.current()
    clock.now -= 500.0
    assert source.current() is first


def test_many_expired_reports_for_one_token_refresh_once(
    clock: FakeClock, source: TokenSource
) -> None:
    failed = source.current()
    clock.now += 2400.0  # older than min_refresh: an ordinary expiry
    answers = [source.on_expired(failed) for _ in range(100)]
    fresh = source.cached
    assert fresh is not None and fresh is not failed
    assert all(answer is fresh for answer in answers)
    assert (source.generation, source.refreshes, source.forced_refreshes) == (2, 1, 1)
    assert source.early_refreshes == 0
    assert fresh.issued_at == int(T0 + 2400.0)


def test_stale_failed_token_does_not_refresh(clock: FakeClock, source: TokenSource) -> None:
    old = source.current()
    clock.now += 3000.0
    new = source.current()  # refreshed by age
    assert source.on_expired(old) is new
    assert source.generation == 2
    assert source.forced_refreshes == 0


def test_failed_token_compared_by_value(clock: FakeClock, source: TokenSource) -> None:
    current = source.current()
    copy = ProviderToken(current.value, current.key_id, current.team_id, current.issued_at)
    assert source.on_expired(copy) is not current
    assert source.generation == 2


def test_foreign_token_before_first_issue(clock: FakeClock, source: TokenSource) -> None:
    foreign = ProviderToken.issue(SigningKey.generate("OTHERKEY01", "TEAM123456"), int(T0))
    token = source.on_expired(foreign)
    assert token is source.cached
    assert (source.generation, source.forced_refreshes) == (1, 0)


def test_young_token_reported_expired_refreshes_once_per_generation(
    clock: FakeClock, source: TokenSource
) -> None:
    # A token a minute old cannot have expired: clock skew or an APNs fault. It is still replaced,
    # once per generation, and counted as early so the skew shows up in metrics.
    first = source.current()
    clock.now += 60.0
    second = source.on_expired(first)
    assert [source.on_expired(first) for _ in range(10)] == [second] * 10
    clock.now += 1.0
    third = source.on_expired(second)
    assert len({first.value, second.value, third.value}) == 3
    assert (source.generation, source.forced_refreshes, source.early_refreshes) == (3, 2, 2)


def test_repr_shows_identity_and_age_but_no_secret(clock: FakeClock, source: TokenSource) -> None:
    assert repr(source) == (
        "TokenSource(key_id='ABC123DEFG', team_id='TEAM123456', generation=0, age=None)"
    )
    token = source.current()
    clock.now += 12.0
    text = repr(source)
    assert text == (
        "TokenSource(key_id='ABC123DEFG', team_id='TEAM123456', generation=1, age=12.8s)"
    )
    for segment in token.value.split("."):
        assert segment not in text
    pem = KEY.to_p8().decode()
    assert "PRIVATE KEY" not in text
    assert not any(line in text for line in pem.splitlines()[1:-1])


@pytest.mark.parametrize(
    ("max_age", "min_refresh"),
    [(3600.0, 1200.0), (0.0, 0.0), (-1.0, 0.0), (3000.0, 3001.0), (3000.0, -1.0)],
)
def test_rejects_unsafe_settings(clock: FakeClock, max_age: float, min_refresh: float) -> None:
    with pytest.raises(ValueError):
        TokenSource(KEY, wall_clock=clock, max_age=max_age, min_refresh=min_refresh)


# --------------------------------------------------------------------------------------------------
# Coordinated mode: refreshes left to the shell that shares the token (engine/server/store/pgtokens)


@pytest.fixture
def shared(clock: FakeClock) -> TokenSource:
    return TokenSource(KEY, wall_clock=clock, coordinated=True)


def test_coordinated_sources_issue_the_first_token_but_leave_age_refreshes_to_the_shell(
    clock: FakeClock, shared: TokenSource
) -> None:
    first = shared.current()  # nothing shared yet: a token now beats none
    assert shared.coordinated and shared.generation == 1 and shared.max_age == 3000.0
    assert shared.due_at == first.issued_at + 3000.0
    clock.now = first.issued_at + 3000.0
    assert shared.current() is first  # max_age: the shell's turn, not ours
    clock.now = first.issued_at + fallback_age(3000.0) - 1
    assert shared.current() is first and shared.local_fallbacks == 0
    clock.now = first.issued_at + fallback_age(3000.0)
    fallback = shared.current()  # the shell never came: issue rather than be rejected
    assert fallback != first and shared.local_fallbacks == 1
    assert fallback_age(3000.0) == 3300.0


def test_coordinated_expired_reports_mark_the_token_once_and_wake_the_shell(
    clock: FakeClock, shared: TokenSource
) -> None:
    woken: list[bool] = []
    shared.on_refresh_wanted = lambda: woken.append(True)
    first = shared.current()
    for _ in range(3):  # a burst of reports for the same token
        assert shared.on_expired(first) is first
    assert woken == [True] and shared.refresh_wanted is first
    assert shared.generation == 1 and shared.forced_refreshes == 0
    clock.now += 1
    other = ProviderToken.issue(KEY, int(clock.now))
    assert shared.adopt(other) and shared.current() is other
    assert shared.refresh_wanted is None and shared.adoptions == 1
    assert shared.on_expired(first) is other  # a late report about the old token: nothing to do


def test_adopting_the_current_token_changes_nothing_and_a_foreign_key_is_refused(
    clock: FakeClock, shared: TokenSource
) -> None:
    assert shared.due_at is None
    token = shared.issue_new()  # signed now, not current
    assert shared.cached is None and token.issued_at == int(T0)
    assert shared.adopt(token) and not shared.adopt(token)
    assert (shared.generation, shared.adoptions) == (1, 1)
    foreign = ProviderToken.issue(SigningKey.generate("OTHERKEY01", "TEAM123456"), int(T0))
    with pytest.raises(ValueError, match="another key or team"):
        shared.adopt(foreign)
    shared.on_expired(token)
    assert shared.adopt(token) is False and shared.refresh_wanted is token  # still the failed one


def test_refresh_locally_is_the_way_out_when_the_database_cannot_be_reached(
    clock: FakeClock, shared: TokenSource
) -> None:
    first = shared.current()
    shared.on_expired(first)
    clock.now += 5
    fresh = shared.refresh_locally(first)
    assert fresh != first and shared.cached is fresh
    assert shared.refresh_wanted is None and shared.forced_refreshes == 1
    assert shared.refresh_locally(first) is fresh  # already superseded: no second refresh
    assert shared.generation == 2
