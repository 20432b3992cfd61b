"""Thin adapters that plug featx into other frameworks.

- :mod:`featx.integrations.basicsr`: ``import featx.integrations.basicsr`` registers featx's
  losses (:mod:`~featx.integrations.basicsr_losses`) and metrics
  (:mod:`~featx.integrations.basicsr_metrics`) in BasicSR's registries.

Importing this package imports no framework; each adapter module imports its own.
"""
