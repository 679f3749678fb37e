#!/usr/bin/env python3
"""Generate the Python gRPC code for proto/ into service/proto/.

The proto tree is mapped onto the package path with ``-Iservice/proto=proto``,
so protoc writes ``service/proto/stt/v1/stt_pb2.py`` and the generated imports
(``from service.proto.stt.v1 import stt_pb2``) are right as generated: nothing
is patched afterwards. The output is a build product (gitignored); it is made
by the setuptools build hook (setup.py), scripts/test.sh and scripts/serve.sh.

Usage: python scripts/gen_proto.py [--check]
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE_PATH = "service/proto"  # where the generated modules live, relative to ROOT
OUT_DIR = ROOT / PACKAGE_PATH

log = logging.getLogger("gen_proto")


def proto_files() -> list[pathlib.Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def is_up_to_date() -> bool:
    """True when every generated module is newer than its .proto source."""
    for proto in proto_files():
        rel = proto.relative_to(PROTO_DIR).with_suffix("")
        for suffix in ("_pb2.py", "_pb2_grpc.py"):
            out = OUT_DIR / rel.parent / (rel.name + suffix)
            if not out.exists() or out.stat().st_mtime < proto.stat().st_mtime:
                return False
    return True


def write_package_inits() -> None:
    """Make every generated folder a regular package (setuptools finds those)."""
    for folder in [OUT_DIR, *[p for p in OUT_DIR.rglob("*") if p.is_dir()]]:
        if folder.name == "__pycache__":
            continue
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from proto/ by scripts/gen_proto.py; do not edit."""\n')


def generate() -> None:
    from grpc_tools import protoc  # build-time dependency only
    import importlib.resources

    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    files = [f"{PACKAGE_PATH}/{p.relative_to(PROTO_DIR).as_posix()}" for p in proto_files()]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PACKAGE_PATH}={PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        *files,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    write_package_inits()
    log.info("generated %d proto file(s) into %s", len(files), OUT_DIR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the generated code is stale")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        return 0 if is_up_to_date() else 1
    if args.force or not is_up_to_date():
        generate()
    else:
        write_package_inits()
    return 0


if __name__ == "__main__":
    sys.exit(main())
