"""A real Kubernetes control plane for tests and the local demo, built from upstream sources.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local processes (the
way controller-runtime's envtest runs them, plus the controllers), kwok fakes GPU nodes, and the
podrunner acts as a kubelet that runs pods as local processes. See docs/dev-control-plane.md.
"""
