"""Tools for development and tests: a local etcd (`embedded`)."""
