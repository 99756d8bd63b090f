"""Every shipped Envoy configuration is one Envoy accepts."""

import subprocess

import pytest

from harness import ENVOY_BIN, ROOT


@pytest.mark.parametrize("config", sorted((ROOT / "envoy").glob("*.yaml")), ids=lambda p: p.name)
def test_envoy_validates_the_shipped_config(config):
    result = subprocess.run([str(ENVOY_BIN), "--mode", "validate", "-c", str(config)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OK" in result.stdout + result.stderr
