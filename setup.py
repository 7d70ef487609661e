"""Build of FlexNPU's compiled extensions.

Environment switches (read at build time):
  FLEXNPU_SANITIZE=1  build with AddressSanitizer + UndefinedBehaviorSanitizer
  FLEXNPU_DEBUG=1     -O0 -g, assertions on, Cython line tracing
Our own C (the headers in flexnpu/_c) is compiled with -Wall -Wextra -Werror in every build.
"""

import glob
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

SANITIZE = os.environ.get("FLEXNPU_SANITIZE") == "1"
DEBUG = os.environ.get("FLEXNPU_DEBUG") == "1"

compile_args = ["-std=gnu11", "-Wall", "-Wextra", "-Werror"]
# Cython's generated code trips a few warnings that say nothing about our code.
compile_args += [
    "-Wno-unused-function",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
    "-Wno-cast-function-type",
    "-Wno-unreachable-code",
    "-Wno-unused-but-set-variable",
]
link_args = []
if DEBUG or SANITIZE:
    compile_args += ["-O0" if DEBUG else "-O1", "-g", "-UNDEBUG", "-DFX_DEBUG", "-fno-omit-frame-pointer"]
else:
    compile_args += ["-O2"]
if SANITIZE:
    compile_args += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    link_args += ["-fsanitize=address,undefined"]
if os.uname().machine in ("aarch64", "arm64"):
    # LSE atomics on Kunpeng (ARMv8.1+); see DESIGN.md principle 4.
    compile_args += ["-march=armv8.1-a"]

directives = {
    "language_level": 3,
    "embedsignature": True,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
}
if DEBUG:
    directives["linetrace"] = True


def ext(name, source):
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    if DEBUG:
        macros += [("CYTHON_TRACE_NOGIL", "1")]
    return Extension(
        name,
        [source],
        depends=glob.glob("flexnpu/_c/*.h"),  # rebuild when a header changes
        include_dirs=["flexnpu/_c", numpy.get_include()],
        define_macros=macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        libraries=["rt"] if sys.platform.startswith("linux") else [],
    )


extensions = [
    ext("flexnpu._ring", "flexnpu/_ring.pyx"),
    ext("flexnpu._proto", "flexnpu/_proto.pyx"),
    ext("flexnpu._acl_hooks", "flexnpu/_acl_hooks.pyx"),
    ext("flexnpu_daemon._drainer", "daemon/_drainer.pyx"),
]

# `daemon/` is installed as `flexnpu_daemon`: a top-level `daemon` package would collide with python-daemon.
packages = find_packages(include=["flexnpu", "flexnpu.*"])
packages += ["flexnpu_daemon"] + ["flexnpu_daemon." + p for p in find_packages("daemon")]

setup(
    packages=packages,
    package_dir={"flexnpu_daemon": "daemon"},
    package_data={"flexnpu": ["_c/*.h", "*.pxd", "_preload/*.py"]},
    ext_modules=cythonize(
        extensions,
        include_path=["."],
        compiler_directives=directives,
        annotate=os.environ.get("FLEXNPU_ANNOTATE") == "1",
    ),
    zip_safe=False,
)
