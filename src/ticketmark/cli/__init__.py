"""The ``ticketmark`` command line: one module per subcommand, registered in ``app``."""
