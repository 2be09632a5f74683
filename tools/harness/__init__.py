"""The project's own harness: starts real services on loopback for tests,
benchmarks and the demo (ZooKeeper, BMC emulators, RabbitMQ, the mini-cloud).
Nothing here is part of the installed product."""
