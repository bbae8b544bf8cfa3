"""``harbor-commerce serve`` (what ``make serve`` runs): an embedded PostgreSQL,
migrated and seeded, the API answering on loopback with the printed token,
and everything stopped and deleted on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from harbordb.testing.cluster import _free_port
from harbordb.testing.plugin import server_dir

ROOT = Path(__file__).resolve().parents[2]


def test_serve_answers_with_demo_data_and_stops_cleanly() -> None:
    with server_dir("serve") as files:  # outside pytest's tree, which runs reset to 0700
        _serve_and_stop(files)


def _serve_and_stop(files: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARBOR", "PG"))}
    env["TMPDIR"] = str(files)  # where serve keeps the embedded server's files
    code = "from harbor_commerce.cli import main; raise SystemExit(main())"
    command = [sys.executable, "-c", code, "serve", "--port", str(port), "--products", "30",
               "--alembic-ini", str(ROOT / "alembic.ini")]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "Uvicorn running" in line:
                break
        output = "".join(lines)
        assert "Uvicorn running" in output, output
        tokens = re.findall(r"^customer (\d+): export TOKEN=(\S+)$", output, re.M)
        assert len(tokens) == 3
        base = f"http://127.0.0.1:{port}"
        catalog = httpx.get(f"{base}/catalog", params={"limit": 50}, timeout=30)
        assert catalog.status_code == 200
        assert len(catalog.json()["items"]) == 30
        orders = httpx.get(
            f"{base}/me/orders", headers={"Authorization": f"Bearer {tokens[0][1]}"}, timeout=30
        )
        assert orders.json() == {"items": [], "next_cursor": None, "has_more": False}
        assert httpx.get(f"{base}/me/orders", timeout=30).status_code == 401
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert not list(files.glob("harbor-serve-*"))  # the embedded server's files are gone
