"""The ``featx`` command line interface (installed as the ``featx_cli`` package)."""
