"""From a pod spec to a local process: $(VAR) expansion, mount rewriting, env and argv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ortkube.devcluster.podrunner import spec as podspec
from ortkube.devcluster.podrunner.expansion import expand, rewrite_mount_paths


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "1"),
        ("x=$(A),y=$(B)", "x=1,y=two words"),
        ("$$(A)", "$(A)"),  # escaped
        ("$(UNDEFINED)", "$(UNDEFINED)"),  # left as written
        ("$(A", "$(A"),  # unterminated
        ("cost $5 and $", "cost $5 and $"),
        ("$$$(A)", "$1"),
        ("", ""),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "two words"}) == expected


MOUNTS = [("/etc/ortkube", "/L/cfg"), ("/etc/ortkube/tls", "/L/tls"), ("/models", "/L/m")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/etc/ortkube/runtime.yaml", "/L/cfg/runtime.yaml"),
        ("--config=/etc/ortkube/runtime.yaml", "--config=/L/cfg/runtime.yaml"),
        ("/etc/ortkube", "/L/cfg"),
        ("/etc/ortkube/tls/ca.crt", "/L/tls/ca.crt"),  # longest mount wins
        ("/etc/ortkubex/a", "/etc/ortkubex/a"),  # not a path prefix
        ("/opt/etc/ortkube/a", "/opt/etc/ortkube/a"),  # not at the start of a path
        ("/models:/etc/ortkube", "/L/m:/L/cfg"),
        ('{"dir": "/models"}', '{"dir": "/L/m"}'),
        ("no paths here", "no paths here"),
    ],
)
def test_mount_paths_are_rewritten_only_as_whole_path_prefixes(text: str, expected: str) -> None:
    assert rewrite_mount_paths(text, MOUNTS) == expected


def make_pod(container: dict[str, Any], volumes: list[dict[str, Any]] | None = None) -> podspec.Pod:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
        "spec": {"nodeName": "ortkube-local", "containers": [container], "volumes": volumes or []},
        "status": {"podIP": "127.1.0.7"},
    }


CONFIG = {("ns", "cfg"): {"level": "debug", "mode": "fast"}}
SECRETS = {("ns", "creds"): {"token": "s3cr3t"}}


def lookups() -> podspec.Lookups:
    def key(table: dict[tuple[str, str], dict[str, str]]) -> podspec.KeyLookup:
        return lambda ns, name, k: table.get((ns, name), {}).get(k)

    return podspec.Lookups(
        config_map_key=key(CONFIG),
        secret_key=key(SECRETS),
        config_map=lambda ns, name: CONFIG.get((ns, name)),
        secret=lambda ns, name: SECRETS.get((ns, name)),
    )


def test_env_resolves_sources_in_order_and_expands_earlier_variables() -> None:
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
            {"name": "URL", "value": "http://$(IP):8080/$(NAME)?l=$(CFG_level)&later=$(LATER)"},
            {"name": "LATER", "value": "x"},
        ],
    }
    env = podspec.container_env(make_pod(container), container, lookups(), {})
    assert env["CFG_mode"] == "fast"
    assert env["TOKEN"] == "s3cr3t" and env["LEVEL"] == "debug" and env["APP"] == "x"
    assert env["URL"] == "http://127.1.0.7:8080/p?l=debug&later=$(LATER)"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"configMapKeyRef": {"name": "nope", "key": "k"}}, "configMapKeyRef nope/k not found"),
        ({"secretKeyRef": {"name": "creds", "key": "nope"}}, "secretKeyRef creds/nope not found"),
        ({"fieldRef": {"fieldPath": "spec.weird"}}, "unsupported downward API fieldPath"),
    ],
)
def test_missing_reference_is_a_container_config_error(entry: dict[str, Any], message: str) -> None:
    container = {"name": "c", "env": [{"name": "X", "valueFrom": entry}]}
    with pytest.raises(podspec.ContainerConfigError, match=message):
        podspec.container_env(make_pod(container), container, lookups(), {})


def test_optional_missing_reference_leaves_the_variable_unset() -> None:
    ref = {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}}
    container = {"name": "c", "env": [{"name": "X", "valueFrom": ref}]}
    assert podspec.container_env(make_pod(container), container, lookups(), {}) == {}


def test_mounts_resolve_per_pod_volumes_shared_claims_and_sub_paths(tmp_path: Path) -> None:
    container = {
        "name": "c",
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/ortkube"},
            {"name": "cache", "mountPath": "/var/cache/engines", "subPath": "trt"},
            {"name": "scratch", "mountPath": "/tmp/s", "readOnly": True},
        ],
    }
    volumes = [
        {"name": "config", "configMap": {"name": "cfg"}},
        {"name": "cache", "persistentVolumeClaim": {"claimName": "engines"}},
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts = podspec.container_mounts(
        make_pod(container, volumes), container, tmp_path / "pod", tmp_path / "vols"
    )
    assert [(m.mount_path, m.local_path) for m in mounts] == [
        ("/etc/ortkube", tmp_path / "pod" / "volumes" / "config"),
        ("/var/cache/engines", tmp_path / "vols" / "ns" / "engines" / "trt"),
        ("/tmp/s", tmp_path / "pod" / "volumes" / "scratch"),
    ]
    assert mounts[2].read_only


def test_argv_is_expanded_then_rewritten_to_local_paths(tmp_path: Path) -> None:
    container = {
        "name": "c",
        "command": ["ortkube", "serve"],
        "args": ["--config", "/etc/ortkube/runtime.yaml", "--host", "$(POD_IP)", "$$(KEEP)"],
    }
    mounts = [podspec.Mount("/etc/ortkube", tmp_path / "cfg", "config", True)]
    argv = podspec.container_argv(container, {"POD_IP": "127.1.0.7"}, mounts)
    assert argv == [
        "ortkube",
        "serve",
        "--config",
        f"{tmp_path}/cfg/runtime.yaml",
        "--host",
        "127.1.0.7",
        "$(KEEP)",
    ]


def test_container_without_command_cannot_run_locally() -> None:
    with pytest.raises(podspec.ContainerConfigError, match="has no command"):
        podspec.container_argv({"name": "c", "args": ["x"]}, {}, [])


def test_process_env_puts_the_venv_first_and_rewrites_declared_paths(tmp_path: Path) -> None:
    mounts = [podspec.Mount("/etc/ortkube", tmp_path / "cfg", "config", True)]
    path = podspec.search_path(tmp_path / "venv" / "bin", "/usr/bin")
    env = podspec.process_env(
        {"ORTKUBE_CONFIG": "/etc/ortkube/runtime.yaml"},
        mounts=mounts,
        pod=make_pod({"name": "c"}),
        service_env={"KUBERNETES_SERVICE_HOST": "127.0.0.1"},
        search_path=path,
        host_env={"HOME": "/root", "SECRET_OF_THE_HOST": "x"},
    )
    assert env["PATH"] == f"{tmp_path}/venv/bin:/usr/bin"
    assert env["ORTKUBE_CONFIG"] == f"{tmp_path}/cfg/runtime.yaml"
    assert env["HOSTNAME"] == "p" and env["HOME"] == "/root"
    assert "SECRET_OF_THE_HOST" not in env


def test_executable_resolves_on_the_process_path(tmp_path: Path) -> None:
    tool = tmp_path / "ortkube"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert podspec.resolve_executable(["ortkube", "serve"], str(tmp_path)) == [str(tool), "serve"]
    with pytest.raises(podspec.ContainerConfigError, match="not found on PATH"):
        podspec.resolve_executable(["no-such-tool"], str(tmp_path))
