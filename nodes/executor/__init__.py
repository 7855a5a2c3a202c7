"""One job's process tree and its containment: spawn, capture, timeout/cancel/abort, cleanup
(`process`), the session scan, cgroups, the containment policy and the fence process."""
