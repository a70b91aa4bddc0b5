"""Hostile inputs, fuzzed: a seeded, bounded set of mutated real clips and photos (`tests/fuzz.py`)
through the CLI, each ending in a complete output or one clear line (the longer run: `make fuzz`)."""

from __future__ import annotations

import pytest

from limelight.detector import default_model_path
from tests import fuzz

CASES, SEED = 24, 20261207


@pytest.mark.slow
@pytest.mark.skipif(not default_model_path().exists(), reason="the shipped int8 model is not built yet")
def test_mutated_clips_and_photos_end_in_an_output_or_one_clear_line(tmp_path, data_dir):
    for relative in fuzz.SEEDS.values():
        if not (data_dir / relative).is_file():
            pytest.skip(f"shared data {relative} not found under {data_dir} (set LIMELIGHT_DATA)")
    seeds = fuzz.make_seeds(tmp_path, data_dir)
    failures = []
    for case in fuzz.cases(seeds, CASES, SEED, tmp_path):
        problem = fuzz.check(case)
        if problem:
            failures.append(f"{case.seed} {case.mutation} {case.suffix}: {problem}")
    # THEN every mutated input ended in a complete output or in exactly one `limelight: error:`
    # line with nothing left behind, within the time limit, the input untouched
    assert failures == []
