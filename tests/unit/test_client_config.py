"""``merge_client_config``: a partial ``client_config`` keeps every default it does not name."""

from __future__ import annotations

from typing import Any

from aiobotocore.config import AioConfig

from idemstore.stores.dynamo import DEFAULT_CLIENT_CONFIG, merge_client_config


def options(config: AioConfig) -> Any:
    """The config as botocore reads it (Any: its stubs omit most options)."""
    return config


def test_nested_retries_are_merged_key_by_key() -> None:
    merged = options(
        merge_client_config(DEFAULT_CLIENT_CONFIG, AioConfig(retries={"max_attempts": 1}))
    )
    assert merged.retries == {"mode": "standard", "max_attempts": 1}
    assert merged.max_pool_connections == 64  # untouched options keep the default
    assert merged.parameter_validation is False


def test_the_users_keys_win_at_every_depth() -> None:
    base = AioConfig(
        retries={"mode": "standard", "max_attempts": 4},
        s3={"addressing_style": "path", "us_east_1_regional_endpoint": "regional"},
        proxies_config={"proxy_use_forwarding_for_https": False},
        connect_timeout=5,
    )
    override = AioConfig(
        retries={"mode": "adaptive"},
        s3={"addressing_style": "virtual"},
        proxies_config={"proxy_ca_bundle": "/ca.pem"},
        connect_timeout=1,
    )
    merged = options(merge_client_config(base, override))
    assert merged.retries == {"mode": "adaptive", "max_attempts": 4}
    assert merged.s3 == {"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"}
    assert merged.proxies_config == {
        "proxy_use_forwarding_for_https": False,
        "proxy_ca_bundle": "/ca.pem",
    }
    assert merged.connect_timeout == 1


def test_aiobotocore_options_survive_the_merge() -> None:
    base = AioConfig(connector_args={"keepalive_timeout": 30, "force_close": False})
    merged = merge_client_config(base, AioConfig(connector_args={"force_close": True}))
    assert options(merged).connector_args == {"keepalive_timeout": 30, "force_close": True}
    assert isinstance(merged, AioConfig)


def test_the_result_shares_no_dict_with_its_inputs() -> None:
    # botocore rewrites the retries dict of a config it builds a client from.
    override = AioConfig(s3={"addressing_style": "path"})
    merged = options(merge_client_config(DEFAULT_CLIENT_CONFIG, override))
    merged.retries["total_max_attempts"] = merged.retries.pop("max_attempts") + 1
    merged.s3["addressing_style"] = "virtual"
    assert options(DEFAULT_CLIENT_CONFIG).retries == {"mode": "standard", "max_attempts": 4}
    assert options(override).s3 == {"addressing_style": "path"}


def test_no_override_gives_a_fresh_copy_of_the_base() -> None:
    copy = options(merge_client_config(DEFAULT_CLIENT_CONFIG))
    assert copy is not DEFAULT_CLIENT_CONFIG
    assert copy.retries == options(DEFAULT_CLIENT_CONFIG).retries
    assert copy.retries is not options(DEFAULT_CLIENT_CONFIG).retries
