"""The local server's configuration, with no server."""

from __future__ import annotations

import os

import pytest

from idemstore.loopback import (
    DUMMY_ACCESS_KEY,
    DUMMY_REGION,
    is_client_setting,
    isolated_session,
    loopback_environment,
)


def test_the_loopback_environment_names_the_endpoint_region_and_dummy_credentials() -> None:
    environment = loopback_environment("http://127.0.0.1:4566", "eu-west-1")

    assert environment["AWS_ENDPOINT_URL_DYNAMODB"] == "http://127.0.0.1:4566"
    assert environment["AWS_REGION"] == environment["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert environment["AWS_ACCESS_KEY_ID"] == DUMMY_ACCESS_KEY
    assert environment["AWS_CONFIG_FILE"] == environment["AWS_SHARED_CREDENTIALS_FILE"]
    assert environment["AWS_CONFIG_FILE"] == os.devnull
    assert loopback_environment("http://x")["AWS_REGION"] == DUMMY_REGION


@pytest.mark.parametrize(
    ("name", "cleared"),
    [
        ("AWS_PROFILE", True),
        ("AWS_SESSION_TOKEN", True),
        ("AWS_ENDPOINT_URL", True),
        ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", True),
        ("AWS_LAMBDA_FUNCTION_NAME", False),
        ("IDEMSTORE_DISABLED", False),
        ("PATH", False),
    ],
)
def test_client_settings_are_the_aws_variables_but_the_lambda_runtimes(
    name: str, cleared: bool
) -> None:
    assert is_client_setting(name) is cleared


@pytest.mark.asyncio
async def test_the_isolated_session_ignores_aws_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile named in the environment cannot exist in the empty files it reads."""
    monkeypatch.setenv("AWS_PROFILE", "a-profile-only-in-the-users-files")
    session = isolated_session()

    async with session.create_client(
        "dynamodb", region_name=DUMMY_REGION, endpoint_url="http://127.0.0.1:9"
    ) as client:
        endpoint_url = client.meta.endpoint_url
    credentials = await session.get_credentials()

    assert endpoint_url == "http://127.0.0.1:9"
    assert credentials is not None
    assert (await credentials.get_frozen_credentials()).access_key == DUMMY_ACCESS_KEY
