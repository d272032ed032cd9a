"""Component command lines, kubeconfigs and certificates of the dev control plane."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from ortkube.cli import main
from ortkube.devcluster import certs, components
from ortkube.devcluster.kubeconfig import render_kubeconfig, render_token_kubeconfig
from ortkube.devcluster.layout import ClusterLayout, Ports, load_layout, save_layout
from ortkube.devcluster.log import format_event

LAYOUT = ClusterLayout(Path("/state"), Path("/bin"), Ports(2379, 2380, 6443, 10257, 10259))


def flags(argv: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in argv[1:])


def test_apiserver_enforces_rbac_and_authenticates_client_certs() -> None:
    argv = components.apiserver_argv(LAYOUT)
    got = flags(argv)
    assert argv[0] == "/bin/kube-apiserver"
    assert got["authorization-mode"] == "Node,RBAC"
    assert got["client-ca-file"] == "/state/pki/ca.crt"
    assert got["etcd-servers"] == "http://127.0.0.1:2379"
    assert got["bind-address"] == "127.0.0.1" and got["secure-port"] == "6443"
    assert got["service-account-signing-key-file"] == "/state/pki/sa.key"
    assert got["service-account-issuer"] == "https://127.0.0.1:6443/"
    assert "disable-admission-plugins" not in got  # ServiceAccount admission stays on


def test_controller_manager_runs_all_controllers_each_with_its_own_identity() -> None:
    got = flags(components.controller_manager_argv(LAYOUT))
    assert got["controllers"] == "*"
    assert got["use-service-account-credentials"] == "true"
    assert got["kubeconfig"] == "/state/kube-controller-manager.kubeconfig"
    assert got["root-ca-file"] == "/state/pki/ca.crt"
    assert got["leader-elect"] == "false"


def test_etcd_listens_on_loopback_only() -> None:
    got = flags(components.etcd_argv(LAYOUT))
    assert got["listen-client-urls"] == "http://127.0.0.1:2379"
    assert got["listen-peer-urls"] == "http://127.0.0.1:2380"
    assert got["data-dir"] == "/state/etcd"


def test_kwok_manages_only_labelled_nodes_with_its_stage_config() -> None:
    got = flags(components.kwok_argv(LAYOUT))
    assert got["manage-all-nodes"] == "false"
    assert got["manage-nodes-with-label-selector"] == "type=kwok"
    assert got["config"] == "/state/kwok.yaml"


def test_podrunner_runs_under_the_given_python() -> None:
    argv = components.podrunner_argv(LAYOUT, Path("/venv/bin/python"))
    assert argv[:3] == ["/venv/bin/python", "-m", "ortkube.devcluster.podrunner"]


def test_kubeconfig_names_server_ca_and_client_cert() -> None:
    config = yaml.safe_load(
        render_kubeconfig(
            "https://127.0.0.1:6443", Path("/p/ca.crt"), Path("/p/a.crt"), Path("/p/a.key")
        )
    )
    assert config["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:6443",
        "certificate-authority": "/p/ca.crt",
    }
    assert config["users"][0]["user"] == {
        "client-certificate": "/p/a.crt",
        "client-key": "/p/a.key",
    }
    assert config["current-context"] == config["contexts"][0]["name"]


def test_token_kubeconfig_reads_the_token_file_and_defaults_the_namespace() -> None:
    config = yaml.safe_load(
        render_token_kubeconfig(
            "https://127.0.0.1:1", Path("/sa/ca.crt"), Path("/sa/token"), "team"
        )
    )
    assert config["users"][0]["user"] == {"tokenFile": "/sa/token"}
    assert config["contexts"][0]["context"]["namespace"] == "team"


def test_admin_client_cert_is_in_system_masters_and_signed_by_the_ca(tmp_path: Path) -> None:
    certs.write_pki(tmp_path)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    admin = x509.load_pem_x509_certificate((tmp_path / "admin.crt").read_bytes())
    assert admin.issuer == ca.subject
    assert (
        admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    )
    admin.verify_directly_issued_by(ca)
    serving = x509.load_pem_x509_certificate((tmp_path / "apiserver.crt").read_bytes())
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert (tmp_path / "sa.key").stat().st_mode & 0o777 == 0o600


def test_existing_pki_is_kept_on_restart(tmp_path: Path) -> None:
    certs.write_pki(tmp_path)
    first = (tmp_path / "ca.crt").read_bytes()
    certs.write_pki(tmp_path)
    assert (tmp_path / "ca.crt").read_bytes() == first


def test_layout_round_trips_through_the_state_dir(tmp_path: Path) -> None:
    layout = ClusterLayout(tmp_path, Path("/bin"), Ports(1, 2, 3, 4, 5))
    save_layout(layout)
    assert load_layout(tmp_path) == layout
    assert load_layout(tmp_path / "nothing") is None


def test_progress_lines_are_key_value_and_quote_spaces() -> None:
    line = format_event("build.progress", {"group": "etcd", "elapsed_s": 1.25, "last": "a b"})
    assert line == 'event=build.progress group=etcd elapsed_s=1.2 last="a b"'


def test_picked_ports_are_distinct() -> None:
    ports = Ports.pick()
    assert len({ports.etcd_client, ports.etcd_peer, ports.apiserver, ports.scheduler}) == 4


def test_env_of_a_cluster_never_started_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dev", "--state-dir", str(tmp_path), "env"]) == 1
    assert "no cluster in" in capsys.readouterr().err


def test_env_prints_kubeconfig_and_path_exports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_layout(ClusterLayout(tmp_path, Path("/bin"), Ports(1, 2, 3, 4, 5)))
    assert main(["dev", "--state-dir", str(tmp_path), "env"]) == 0
    out = capsys.readouterr().out
    assert f"export KUBECONFIG={tmp_path}/admin.kubeconfig\n" in out
    assert "export PATH=/bin:$PATH\n" in out
