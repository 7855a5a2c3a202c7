"""The composition root: `node.Node` builds and wires every part of a node (API, session, worker,
leader term) and owns its lifecycle. Nothing imports this package but the CLI."""
