"""Test-only helpers (synthetic trajectories, reference-code drivers, toy calculators)
shared by tests/ and bench/."""
