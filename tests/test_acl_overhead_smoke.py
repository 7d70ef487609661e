"""perf/acl_overhead.py --quick runs and reports every figure (a behaviour check, not a speed goal)."""

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_acl_overhead_quick_reports_every_figure(tmp_path):
    env = {**os.environ, "FLEXNPU_RUNTIME_DIR": str(tmp_path / "rt")}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "perf", "acl_overhead.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    for mode in ("direct", "daemon"):
        launch = r["launch"][mode]
        assert launch["launch_us_median"] > 0 and launch["launches_per_s_median"] > 0
        assert r["qwen_tiny"][mode]["decode_tokens_per_s_median"] > 0
    assert r["ping_rtt_us"] > 0 and math.isfinite(r["launch_added_us_median"])
    assert r["qwen_tiny"]["same_tokens"] is True, "daemon and direct must generate the same tokens"
