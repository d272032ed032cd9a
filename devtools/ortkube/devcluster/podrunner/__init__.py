"""The podrunner: a kubelet stand-in that runs the pods scheduled onto its node as processes.

It registers the Node ``ortkube-local``, gives each pod a loopback IP, materializes its volumes
into a per-pod folder, runs its containers' commands locally, probes readiness, restarts, and
terminates on deletion. See docs/dev-control-plane.md for what it does and does not emulate.
"""
