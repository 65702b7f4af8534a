"""The APNs reason table (engine.apns.reasons) checked against the fact sheet (apns.md §3, §7)."""

from __future__ import annotations

import pytest

from engine.apns.reasons import DEVICE_REASONS, Outcome, Reason, info, parse_reason, status_of

# apns.md §3 "Reason strings for `/3/device`", row by row.
DEVICE_TABLE: dict[int, list[str]] = {
    400: [
        "BadCollapseId",
        "BadDeviceToken",
        "BadExpirationDate",
        "BadMessageId",
        "BadPriority",
        "BadTopic",
        "DeviceTokenNotForTopic",
        "DuplicateHeaders",
        "IdleTimeout",
        "InvalidPushType",
        "MissingDeviceToken",
        "MissingTopic",
        "PayloadEmpty",
        "TopicDisallowed",
    ],
    403: [
        "BadCertificate",
        "BadCertificateEnvironment",
        "ExpiredProviderToken",
        "Forbidden",
        "InvalidProviderToken",
        "MissingProviderToken",
        "UnrelatedKeyIdInToken",
    ],
    404: ["BadPath"],
    405: ["MethodNotAllowed"],
    410: ["ExpiredToken", "Unregistered"],
    413: ["PayloadTooLarge"],
    429: ["TooManyProviderTokenUpdates", "TooManyRequests"],
    500: ["InternalServerError"],
    503: ["ServiceUnavailable", "Shutdown"],
}

# apns.md §7 "Broadcast and channel errors": the reasons only the channel routes document.
BROADCAST_ONLY: dict[str, int] = {
    "FeatureNotEnabled": 400,
    "MissingChannelId": 400,
    "BadChannelId": 400,
    "ChannelNotRegistered": 400,
    "BadRequestParams": 400,
    "BadRequestPayload": 400,
    "MissingPushType": 400,
    "CannotCreateChannelConfig": 400,
    "TopicMismatch": 403,
}


def _parsed(text: str) -> Reason:
    reason = parse_reason(text)
    assert reason is not None, f"{text} is missing from the table"
    return reason


@pytest.mark.parametrize(
    ("status", "text"),
    [(status, text) for status, texts in DEVICE_TABLE.items() for text in texts],
)
def test_device_reasons_carry_the_documented_status(status: int, text: str) -> None:
    reason = _parsed(text)
    row = info(reason)
    assert (row.reason, row.status, row.device) == (reason, status, True)
    assert status_of(reason) == status
    assert reason in DEVICE_REASONS


@pytest.mark.parametrize(("text", "status"), BROADCAST_ONLY.items())
def test_broadcast_only_reasons_are_not_device_reasons(text: str, status: int) -> None:
    reason = _parsed(text)
    assert (info(reason).status, info(reason).device) == (status, False)
    assert reason not in DEVICE_REASONS


@pytest.mark.parametrize(
    "text",
    [
        "BadDeviceToken",
        "DeviceTokenNotForTopic",
        "Forbidden",
        "ExpiredToken",
        "Unregistered",
        "PayloadTooLarge",
    ],
)
def test_never_retry_reasons_are_never_retried_as_is(text: str) -> None:
    # apns.md §3 retry guidance: these must not be sent again unchanged.
    assert info(_parsed(text)).outcome in {Outcome.DROP_TOKEN, Outcome.FIX_REQUEST}


def test_every_reason_has_its_own_row() -> None:
    assert [info(reason).reason for reason in Reason] == list(Reason)


@pytest.mark.parametrize("text", ["", "badDeviceToken", "BadDeviceToken ", "NewReasonFrom2030"])
def test_unknown_spellings_parse_to_none(text: str) -> None:
    # Reason strings are matched exactly as sent; an unknown one falls back on the status.
    assert parse_reason(text) is None
