"""Process-wide set-up of a node: log rendering (`logsetup`) and garbage-collector tuning."""
