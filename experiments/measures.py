"""Measures of trained networks. Each docstring says exactly what is measured: of which loss,
at which weights, per sample or batch-averaged, and which norm."""

from __future__ import annotations
