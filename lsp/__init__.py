"""Protocol layer: the pygls server, LSP <-> engine conversion, and the command line."""
