"""Build hook: generate service/proto/ from proto/ before packaging.

All metadata lives in pyproject.toml. This file only adds the protobuf code
generation step. It runs before setuptools looks for packages (so the
generated service.proto packages are found and shipped in the wheel) and again
in build_py; the generated code is a build product and is never committed.
"""
import pathlib
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).resolve().parent
GEN = ROOT / "scripts" / "gen_proto.py"


def generate_proto() -> None:
    # Absent in an sdist built without scripts/; then the code is already there.
    if GEN.exists():
        subprocess.check_call([sys.executable, str(GEN)], cwd=ROOT)


class BuildPyWithProto(build_py):
    def run(self) -> None:
        generate_proto()
        super().run()


generate_proto()
setup(cmdclass={"build_py": BuildPyWithProto})
