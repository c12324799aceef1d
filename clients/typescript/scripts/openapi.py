"""Regenerate the TypeScript client's types from the server: openapi.json, then src/openapi.d.ts.

    python clients/typescript/scripts/openapi.py           # write both
    python clients/typescript/scripts/openapi.py --check   # exit 1 when either is out of date

Run from the repository root with the server importable (the project's venv).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SPEC, TYPES = HERE / "openapi.json", HERE / "src" / "openapi.d.ts"


def server_spec() -> str:
    from api.app import create_app
    from memsvc.config import Settings

    with tempfile.TemporaryDirectory() as tmp:  # the factory opens nothing; the lifespan would
        spec = create_app(Settings(data_dir=Path(tmp))).openapi()
    return json.dumps(spec, indent=2, sort_keys=True) + "\n"


def generate_types(spec_path: Path, out: Path) -> None:
    binary = HERE / "node_modules" / ".bin" / "openapi-typescript"
    subprocess.run([str(binary), str(spec_path), "--default-non-nullable", "false", "-o", str(out)], check=True, capture_output=True, text=True)


def main(check: bool) -> int:
    spec = server_spec()
    if not check:
        SPEC.write_text(spec)
        generate_types(SPEC, TYPES)
        print(f"wrote {SPEC.relative_to(HERE)} and {TYPES.relative_to(HERE)}")
        return 0
    stale = []
    if not SPEC.exists() or SPEC.read_text() != spec:
        stale.append(str(SPEC.relative_to(HERE)))
    with tempfile.TemporaryDirectory() as tmp:
        fresh_spec, fresh_types = Path(tmp) / "openapi.json", Path(tmp) / "openapi.d.ts"
        fresh_spec.write_text(spec)
        generate_types(fresh_spec, fresh_types)
        if not TYPES.exists() or TYPES.read_text() != fresh_types.read_text():
            stale.append(str(TYPES.relative_to(HERE)))
    if stale:
        print(f"out of date: {', '.join(stale)}; run python clients/typescript/scripts/openapi.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
