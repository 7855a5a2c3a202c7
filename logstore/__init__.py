"""Capture, spool and read the output of runs."""
