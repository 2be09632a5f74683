"""Console scripts: the only place, with service set-up, that reads CONF."""
