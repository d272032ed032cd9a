"""The wrapper go.mod files, linker flags and stamps the dev control plane builds from."""

from __future__ import annotations

from pathlib import Path

import pytest

from ortkube.devcluster import build
from ortkube.devcluster.versions import (
    ETCD_VERSION,
    KUBERNETES_VERSION,
    STAGING_MODULES,
    STAGING_VERSION,
    GoBinary,
    binary,
)


def test_staging_version_follows_the_kubernetes_minor_and_patch() -> None:
    assert KUBERNETES_VERSION == "v1.36.3"
    assert STAGING_VERSION == "v0.36.3"


def test_kubernetes_go_mod_pins_every_staging_module_to_its_tag() -> None:
    text = build.render_go_mod([binary("kube-apiserver")], "ortkube.local/build/kubernetes")
    assert "require k8s.io/kubernetes v1.36.3\n" in text
    assert text.count(" => ") == len(STAGING_MODULES) == 33
    for module in ("api", "client-go", "cri-streaming", "externaljwt", "streaming"):
        assert f"\tk8s.io/{module} => k8s.io/{module} v0.36.3\n" in text
    assert text.startswith("module ortkube.local/build/kubernetes\n\ngo 1.26.0\n")


def test_etcd_go_mod_pins_the_sibling_modules_upstream_replaces_with_paths() -> None:
    text = build.render_go_mod([binary("etcd")], "ortkube.local/build/etcd")
    assert f"require go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n" in text
    for sibling in ("api/v3", "client/pkg/v3", "client/v3", "pkg/v3"):
        assert f"go.etcd.io/etcd/{sibling} => go.etcd.io/etcd/{sibling} {ETCD_VERSION}" in text


def test_go_mod_without_replaces_has_no_replace_block() -> None:
    assert "replace" not in build.render_go_mod([binary("kwok")], "m")


def test_kubernetes_ldflags_stamp_the_version_both_version_packages_report() -> None:
    flags = build.render_ldflags(binary("kube-apiserver"))
    assert flags.startswith("-s -w ")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.36.3" in flags
        assert f"-X {package}.gitMajor=1" in flags
        assert f"-X {package}.gitMinor=36" in flags


def test_build_argv_is_static_trimmed_and_names_every_package_of_the_group() -> None:
    group = [binary("kube-apiserver"), binary("kubectl")]
    argv = build.render_build_argv(group, Path("/out/"), parallel=2)
    assert argv[:5] == ["go", "build", "-v", "-trimpath", "-p=2"]
    assert argv[-2:] == ["k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl"]
    assert build.go_env({})["CGO_ENABLED"] == "0"


def test_go_caches_live_under_the_one_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORTKUBE_CACHE_DIR", str(tmp_path))
    env = build.go_env({})
    assert env["GOMODCACHE"] == str(tmp_path / "go" / "mod")
    assert env["GOCACHE"] == str(tmp_path / "go" / "build")
    assert "GOSUMDB" not in env  # checksums stay verified


def test_stamp_changes_with_the_version_so_a_new_pin_rebuilds() -> None:
    old = GoBinary("kwok", "sigs.k8s.io/kwok", "v0.7.0", "sigs.k8s.io/kwok/cmd/kwok")
    new = GoBinary("kwok", "sigs.k8s.io/kwok", "v0.8.0", "sigs.k8s.io/kwok/cmd/kwok")
    assert build.stamp_text(old) != build.stamp_text(new)


def test_cached_binary_is_not_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTKUBE_CACHE_DIR", str(tmp_path))
    assert set(build.groups_to_build()) == {"etcd", "kubernetes", "kwok", "helm"}
    bins = tmp_path / "k8s" / KUBERNETES_VERSION / "bin"
    (bins / ".stamps").mkdir(parents=True)
    for name in ("kwok", "helm"):
        (bins / name).write_text("#!")
        (bins / ".stamps" / name).write_text(build.stamp_text(binary(name)))
    (bins / "etcd").write_text("#!")
    (bins / ".stamps" / "etcd").write_text("built from something else\n")
    assert set(build.groups_to_build()) == {"etcd", "kubernetes"}


def test_unknown_binary_name_is_refused() -> None:
    with pytest.raises(build.BuildError, match="no pinned binary named"):
        build.groups_to_build(["kubelet"])
