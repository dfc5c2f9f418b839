"""The worker layer: what runs inside worker processes (the task loop, task
execution, the fork server that starts them) and the argument encoding that
the driver shares with them."""
