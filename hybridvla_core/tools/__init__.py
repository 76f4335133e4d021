"""The `hybridvla` subcommands' bodies: bench, offline and closed-loop evaluation, checkpoint import/export,
doctor, train, and the demo's report."""
