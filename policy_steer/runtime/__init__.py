"""Control loops that turn chunks into actions at the control rate (modes sync, async, vlash)."""
