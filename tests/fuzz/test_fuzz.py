"""The fuzzers' short run (about 50 s in all): model loading and canonicalisation, and image loading, each
from its seed corpus. A crash fails the test and names the file to copy into tests/fuzz/crashes/."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

SECONDS = 20  # per target: two targets and their start-up stay under a minute


@pytest.mark.fuzz
@pytest.mark.parametrize("target", run.TARGETS)
def test_short_fuzzing_run_finds_no_crash(target, tmp_path):
    pytest.importorskip("atheris")
    result = run.run_target(target, SECONDS, str(tmp_path))
    assert result["execs"] and result["execs"] > 100, open(result["log"]).read()[-3000:]
    assert not result["crashes"] and result["returncode"] == 0, (
        f"{target} crashed: copy {result['crashes']} to tests/fuzz/crashes/{target}/ and fix it; log "
        + open(result["log"]).read()[-3000:])
