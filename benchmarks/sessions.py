"""AWS sessions for loopback endpoints: dummy credentials, no user configuration read."""

from __future__ import annotations

import os

from aiobotocore.session import AioSession

DUMMY_REGION = "us-east-1"
DUMMY_ACCESS_KEY = "testing"
DUMMY_SECRET_KEY = "testing"  # not a secret: the loopback servers accept anything


def isolated_session() -> AioSession:
    session = AioSession()
    # Never read ~/.aws: point the config and credentials files at nothing.
    session.set_config_variable("config_file", os.devnull)
    session.set_config_variable("credentials_file", os.devnull)
    session.set_credentials(DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY)
    return session
