"""Tools around the sidecar (stand-ins, demos, generators); not part of the installed package."""
