"""Build hook: the compiled extension of plugins/ is declared in plugins/build_ext.py.

Everything else about the package lives in pyproject.toml.
"""
import os
import sys

from setuptools import setup

ext_modules, cmdclass = [], {}
if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins", "build_ext.py")):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from plugins.build_ext import cmdclass, get_extensions  # noqa: E402

    ext_modules = get_extensions()

setup(ext_modules=ext_modules, cmdclass=cmdclass)
