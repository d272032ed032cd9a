"""``ortkube operator`` flags: environment defaults, flags on top, and the top-level listing."""

import pytest

from ortkube.cli import main as ortkube_main
from ortkube.operator.cli import DEFAULT_LIVENESS, parse_args, settings_from
from ortkube.operator.settings import DEFAULT_RUNTIME_IMAGE, OperatorSettings


def test_defaults_watch_every_namespace_standalone() -> None:
    args = parse_args([], "ortkube operator")
    assert (args.namespace, args.peering, args.liveness) == ([], None, DEFAULT_LIVENESS)


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTKUBE_RUNTIME_IMAGE", "from-env:1")
    monkeypatch.setenv("ORTKUBE_ENGINE_CACHE_URI", "s3://env/engines")
    monkeypatch.setenv("ORTKUBE_RESYNC_INTERVAL", "30")
    args = parse_args(["--runtime-image", "from-flag:2", "-n", "a", "-n", "b"], "op")
    settings = settings_from(args)
    assert settings.runtime_image == "from-flag:2"
    assert settings.default_engine_cache_uri == "s3://env/engines"
    assert settings.resync_interval_s == 30.0
    assert args.namespace == ["a", "b"]


def test_settings_from_empty_environment() -> None:
    assert OperatorSettings.from_env({}) == OperatorSettings(runtime_image=DEFAULT_RUNTIME_IMAGE)


def test_namespaces_and_all_namespaces_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        parse_args(["-n", "a", "-A"], "op")


def test_top_level_help_lists_operator_and_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert ortkube_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "operator" in out and "crd" in out
