"""Infrastructure: the SAM template's helpers, the state machine, sample events, the local run."""
