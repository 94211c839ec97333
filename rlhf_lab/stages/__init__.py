"""Training stages. Each is a plain function that returns a RunResult and writes a run folder."""
