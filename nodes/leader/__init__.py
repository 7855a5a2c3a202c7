"""What runs only while this node leads: the tick scheduler, the workflow engine, the notifier,
and the loops they share."""
