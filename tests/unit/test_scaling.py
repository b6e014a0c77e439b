"""Scaling settings without a cluster: rpc endpoints, the bind guard, Ray options, routing."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from server.deploy.options import RayOptions
from server.deploy.rpc_server import PublicBindRefused, check_bind, is_safe_bind
from server.engine.options import LoadOptions, parse_endpoint
from server.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def test_rpc_servers_take_a_list_or_llama_cpp_comma_form() -> None:
    a = LoadOptions(rpc_servers=("10.0.0.2:50052", "gpu-box:50052"))
    b = LoadOptions.model_validate({"rpc_servers": "10.0.0.2:50052, gpu-box:50052"})
    assert a.rpc_servers == b.rpc_servers == ("10.0.0.2:50052", "gpu-box:50052")
    assert parse_endpoint("gpu-box:50052") == ("gpu-box", 50052)


@pytest.mark.parametrize("bad", ["10.0.0.2", "[::1]:50052", "host:0", "host:70000", "a b:1"])
def test_bad_rpc_endpoints_are_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(ValidationError, match="host:port"):
        LoadOptions(rpc_servers=(bad,))


def test_duplicate_endpoints_and_empty_splits_are_refused() -> None:
    with pytest.raises(ValidationError, match="twice"):
        LoadOptions(rpc_servers=("h:1", "h:1"))
    with pytest.raises(ValidationError, match="non-negative"):
        LoadOptions(tensor_split=(0.0, 0.0))
    assert LoadOptions(tensor_split=(3, 1)).tensor_split == (3.0, 1.0)


def test_rpc_servers_come_from_the_environment_per_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GGUF_SERVE_LOAD__RPC_SERVERS", '["10.1.0.2:50052","10.1.0.3:50052"]')
    monkeypatch.setenv("GGUF_SERVE_LOAD__TENSOR_SPLIT", "[2,1]")
    load = load_settings().load
    assert load.rpc_servers == ("10.1.0.2:50052", "10.1.0.3:50052")
    assert load.tensor_split == (2.0, 1.0)


@pytest.mark.parametrize(
    ("address", "safe"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("192.168.1.5", True),
        ("fd00::1", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("8.8.8.8", False),
        ("2001:4860::1", False),
    ],
)
def test_only_loopback_and_private_addresses_are_safe_binds(address: str, safe: bool) -> None:
    assert is_safe_bind(ipaddress.ip_address(address)) is safe


def test_a_public_bind_is_refused_unless_explicitly_allowed() -> None:
    with pytest.raises(PublicBindRefused, match="--allow-public-bind"):
        check_bind("0.0.0.0", allow_public=False)
    check_bind("0.0.0.0", allow_public=True)
    check_bind("127.0.0.1", allow_public=False)


def test_rpc_server_command_refuses_a_public_bind_before_starting_anything() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "rpc-server",
            "--host",
            "0.0.0.0",
            "--binary",
            "/bin/false",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 1
    assert "refusing to bind rpc-server to 0.0.0.0" in done.stderr


def test_ray_options_validate_bounds() -> None:
    assert RayOptions(replicas="auto").replicas == "auto"
    with pytest.raises(ValidationError, match="min_replicas"):
        RayOptions(min_replicas=5, max_replicas=2)
    with pytest.raises(ValidationError):
        RayOptions(replicas=0)


def test_deployment_options_follow_the_settings() -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    from server.deploy.ray import deployment_options, pinned

    settings = load_settings(
        load={"n_parallel": 6}, max_queue=10, ray={"replicas": "auto", "max_replicas": 3}
    )
    opts = deployment_options(settings)
    assert opts["max_ongoing_requests"] == 16  # slots plus queue
    assert opts["autoscaling_config"]["target_ongoing_requests"] == 6
    assert opts["autoscaling_config"]["max_replicas"] == 3
    assert opts["request_router_config"].request_router_kwargs == {"busy_at": 6}
    fixed = deployment_options(load_settings(ray={"replicas": 2, "router": "power-of-two"}))
    assert fixed["num_replicas"] == 2 and "request_router_config" not in fixed
    # A router switch is a new deployment: Serve handles never rebuild their router.
    assert opts["name"] != fixed["name"]
    on_gpu = pinned(settings, {"CPU": 3.0, "GPU": 1.0}).load
    assert (on_gpu.n_threads, on_gpu.n_gpu_layers) == (3, -1)


def test_a_session_always_prefers_one_replica_and_sessions_spread() -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    from server.deploy.ray_router import rank_for_session

    replicas = ["r-a", "r-b", "r-c"]
    first = Counter(rank_for_session(f"conversation-{i}", replicas)[0] for i in range(300))
    assert set(first) == set(replicas) and min(first.values()) > 60
    assert rank_for_session("c-1", replicas) == rank_for_session("c-1", list(reversed(replicas)))
    # A replica leaving moves only its own sessions.
    kept = [s for s in range(300) if rank_for_session(f"s{s}", replicas)[0] != "r-c"]
    assert all(
        rank_for_session(f"s{s}", replicas)[0] == rank_for_session(f"s{s}", ["r-a", "r-b"])[0]
        for s in kept
    )
