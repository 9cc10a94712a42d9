"""Kubernetes tooling: the Helm chart rendered and checked offline (:mod:`cluster.chart`),
and the chart's pods run on this machine (:mod:`cluster.local`, ``python -m cluster``)."""
