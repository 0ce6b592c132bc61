"""Live runs: options, phase plans, the processes a run starts, the run itself, the replayer, run folders."""
