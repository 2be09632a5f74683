"""instanceha-controller: observe every host, decide with the pure engine, act."""
