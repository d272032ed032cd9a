"""``ortkube demo``: the chart, the operator and one served model on the dev control plane."""
