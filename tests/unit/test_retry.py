"""The download retry policy: its delays, what it retries, and what botocore is told."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ortkube.runtime.retry import RetryPolicy, retryable_status, retrying
from ortkube.runtime.s3_client import s3_client


def test_delays_double_from_the_first_and_stop_at_the_cap() -> None:
    policy = RetryPolicy(attempts=8, first_delay_s=0.5, max_delay_s=3.0)
    assert [policy.delay_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_download_retries_setting_is_one_attempt_plus_that_many() -> None:
    assert RetryPolicy.with_retries(0).attempts == 1
    assert RetryPolicy.with_retries(3).attempts == 4
    with pytest.raises(ValueError, match="at least one attempt"):
        RetryPolicy(attempts=0)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (408, True), (425, True), (429, True), (404, False), (403, False)],
)
def test_only_statuses_a_later_attempt_may_not_meet_are_retried(
    status: int, retryable: bool
) -> None:
    assert retryable_status(status) is retryable


def test_botocore_gets_its_standard_mode_with_our_attempt_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    client = s3_client(RetryPolicy(attempts=3))
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}


@pytest.mark.parametrize("style", ["path", "virtual"])
def test_the_addressing_style_is_the_one_setting_boto3_reads_from_no_variable(
    monkeypatch: pytest.MonkeyPatch, style: str
) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("ORTKUBE_S3_ADDRESSING_STYLE", style)
    assert s3_client(RetryPolicy()).meta.config.s3 == {"addressing_style": style}
    monkeypatch.setenv("ORTKUBE_S3_ADDRESSING_STYLE", "sideways")
    with pytest.raises(ValueError, match="ORTKUBE_S3_ADDRESSING_STYLE='sideways'"):
        s3_client(RetryPolicy())


class Flaky:
    """Fails ``failures`` times with ``error``, then returns "done"."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def _transient(error: Exception) -> bool:
    return isinstance(error, ConnectionError)


async def test_retrying_stops_at_success_and_logs_each_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempt = Flaky(2, ConnectionError("reset"))
    policy = RetryPolicy(attempts=3, first_delay_s=0.01)
    with caplog.at_level(logging.WARNING, logger="ortkube.runtime.retry"):
        assert await retrying(policy, attempt, _transient, "http://127.0.0.1/m") == "done"
    assert attempt.calls == 3
    assert caplog.text.count("event=download_retry what=http://127.0.0.1/m") == 2


@pytest.mark.parametrize(
    ("error", "calls"),
    [(ConnectionError("reset"), 3), (PermissionError("no"), 1)],
    ids=["transient-until-attempts-run-out", "permanent-at-once"],
)
async def test_retrying_raises_the_last_error(error: Exception, calls: int) -> None:
    attempt = Flaky(10, error)
    with pytest.raises(type(error)):
        await asyncio.wait_for(
            retrying(RetryPolicy(attempts=3, first_delay_s=0.01), attempt, _transient, "x"), 5
        )
    assert attempt.calls == calls
