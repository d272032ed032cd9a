"""Every upstream version the dev control plane builds, pinned in this one place."""

from __future__ import annotations

from dataclasses import dataclass, field

KUBERNETES_VERSION = "v1.36.3"
# The staging modules (k8s.io/api, client-go, ...) are tagged v0.<minor>.<patch> for v1.<minor>.
STAGING_VERSION = "v0." + KUBERNETES_VERSION.removeprefix("v1.")
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"

# k8s.io/kubernetes' go.mod replaces these with ./staging/src/k8s.io/<name>; replace directives
# of a dependency are ignored, so the wrapper module pins each one to its tagged release.
# The list matches the replace block of k8s.io/kubernetes v1.36.3's go.mod.
STAGING_MODULES: tuple[str, ...] = (
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "cri-streaming",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
    "streaming",
)

# etcd's server module replaces its sibling modules with ../api etc.; pin them to the same tag.
ETCD_SIBLING_MODULES: tuple[str, ...] = (
    "go.etcd.io/etcd/api/v3",
    "go.etcd.io/etcd/client/pkg/v3",
    "go.etcd.io/etcd/client/v3",
    "go.etcd.io/etcd/pkg/v3",
)


@dataclass(frozen=True)
class GoBinary:
    """One binary built from a Go module: where it comes from and how to stamp its version."""

    name: str
    module: str
    version: str
    package: str
    replaces: dict[str, str] = field(default_factory=dict)
    version_vars: dict[str, str] = field(default_factory=dict)
    group: str = ""

    @property
    def stamp(self) -> str:
        """What must match for a cached build to be reused."""
        return f"{self.name} {self.module}@{self.version} {self.package}"


def kubernetes_version_vars(version: str = KUBERNETES_VERSION) -> dict[str, str]:
    """The -X variables hack/lib/version.sh sets, so /version and `kubectl version` are right."""
    major, minor = version.removeprefix("v").split(".")[:2]
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    return {
        f"{package}.{name}": value
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for name, value in values.items()
    }


def _kubernetes(name: str) -> GoBinary:
    return GoBinary(
        name=name,
        module="k8s.io/kubernetes",
        version=KUBERNETES_VERSION,
        package=f"k8s.io/kubernetes/cmd/{name}",
        replaces={f"k8s.io/{m}": STAGING_VERSION for m in STAGING_MODULES},
        version_vars=kubernetes_version_vars(),
        group="kubernetes",
    )


BINARIES: tuple[GoBinary, ...] = (
    GoBinary(
        name="etcd",
        module="go.etcd.io/etcd/server/v3",
        version=ETCD_VERSION,
        package="go.etcd.io/etcd/server/v3",
        replaces=dict.fromkeys(ETCD_SIBLING_MODULES, ETCD_VERSION),
        group="etcd",
    ),
    _kubernetes("kube-apiserver"),
    _kubernetes("kube-controller-manager"),
    _kubernetes("kube-scheduler"),
    _kubernetes("kubectl"),
    GoBinary(
        name="kwok",
        module="sigs.k8s.io/kwok",
        version=KWOK_VERSION,
        package="sigs.k8s.io/kwok/cmd/kwok",
        group="kwok",
    ),
    GoBinary(
        name="helm",
        module="helm.sh/helm/v3",
        version=HELM_VERSION,
        package="helm.sh/helm/v3/cmd/helm",
        # Without the first `helm version` says v3.22 and charts' kubeVersion checks see no
        # patch; without the others `helm template`/`lint` assume Kubernetes v1.20 (helm's
        # Makefile stamps them from its client-go; we stamp the version we run).
        version_vars={
            "helm.sh/helm/v3/internal/version.version": HELM_VERSION,
            **{
                f"helm.sh/helm/v3/pkg/{package}.{name}": value
                for package in ("chartutil", "lint/rules")
                for name, value in (
                    ("k8sVersionMajor", KUBERNETES_VERSION.removeprefix("v").split(".")[0]),
                    ("k8sVersionMinor", KUBERNETES_VERSION.split(".")[1]),
                )
            },
        },
        group="helm",
    ),
)

# The kwok Stage files (upstream's "fast" node and pod lifecycles) that `up` passes to kwok.
KWOK_STAGE_FILES: tuple[str, ...] = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


def binary(name: str) -> GoBinary:
    """The pinned binary called ``name``."""
    for candidate in BINARIES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no pinned binary named {name!r}; known: {[b.name for b in BINARIES]}")
