"""etcd coordination and the pure models of cronmesh."""
