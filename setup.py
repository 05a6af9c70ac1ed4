"""Builds the native client shims into the package before it is collected, and marks
the wheel as platform-specific (it carries compiled libraries)."""
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution


class BuildWithShims(build_py):
    def run(self):
        # this tree's orion_client, never one an editable install maps elsewhere
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from orion_client.native_build import build
        build()
        super().run()


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithShims}, distclass=BinaryDistribution)
