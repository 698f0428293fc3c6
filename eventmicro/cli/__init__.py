"""The ``eventmicro`` command line: one module per verb, registered in `eventmicro.cli.main`."""
