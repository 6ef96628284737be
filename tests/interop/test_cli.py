"""`tern check-config` and `tern serve` start-up behaviour."""

from __future__ import annotations

import subprocess

from conftest import free_port, render_config


def run(binary, *args, timeout=30):
    p = subprocess.run([str(binary), *map(str, args)], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def test_check_config_accepts_and_prints_effective_config(tern_binary, tmp_path):
    cfg = tmp_path / "tern.toml"
    cfg.write_text(render_config(free_port(), tmp_path / "data"))
    code, out = run(tern_binary, "check-config", cfg)
    assert code == 0, out
    assert "mx.example.test" in out, f"effective config not printed:\n{out}"
    assert "example.test" in out and "alice" in out


def test_check_config_rejects_bad_value_and_says_which(tern_binary, tmp_path):
    cfg = tmp_path / "tern.toml"
    cfg.write_text(render_config(free_port(), tmp_path / "data", smtp={"bare_line_endings": "sometimes"}))
    code, out = run(tern_binary, "check-config", cfg)
    assert code != 0, f"an invalid bare_line_endings value was accepted:\n{out}"
    assert "bare_line_endings" in out, f"the error does not name the bad key:\n{out}"


def test_check_config_rejects_missing_file(tern_binary, tmp_path):
    code, out = run(tern_binary, "check-config", tmp_path / "nope.toml")
    assert code != 0
    assert "nope.toml" in out, out


def test_serve_with_invalid_config_exits_non_zero(tern_binary, tmp_path):
    cfg = tmp_path / "tern.toml"
    text = render_config(free_port(), tmp_path / "data").replace('role = "mx"', 'role = "nonsense"')
    cfg.write_text(text)
    code, out = run(tern_binary, "serve", "--config", cfg, timeout=30)
    assert code != 0, out
    assert "role" in out or "nonsense" in out, out
