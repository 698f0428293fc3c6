"""The ``eventmicro`` command line, the top edge: one module per verb, listed in `eventmicro.cli.main`."""
