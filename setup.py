"""Build of shoal's compiled extensions: the object store's C core and its
Cython binding (shoal._store._core), reading spilled objects from files
(shoal._store._files), and the message rings between processes
(shoal._channel).

Environment switches:
  SHOAL_DEBUG=1     -O0 -g with C asserts on
  SHOAL_SANITIZE=1  AddressSanitizer and UndefinedBehaviorSanitizer (set
                    LD_PRELOAD to libasan when running Python)
  SHOAL_MAX_CLIENTS=N  processes the store admits at once (a multiple of 64;
                    default 256): the pool's ceiling follows it. For machines
                    of more than about 200 cores (docs/cluster.md: its cost)
"""

import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("SHOAL_DEBUG") == "1"
sanitize = os.environ.get("SHOAL_SANITIZE") == "1"

cflags = ["-std=gnu11", "-Wall", "-Wno-unused-function"]
cflags += ["-O0", "-g", "-UNDEBUG"] if debug else ["-O2"]
ldflags = []
if sanitize:
    cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    ldflags += ["-fsanitize=address,undefined"]

max_clients = os.environ.get("SHOAL_MAX_CLIENTS")
macros = [("STORE_MAX_CLIENTS", str(int(max_clients)))] if max_clients else []

store_sources = sorted(set(glob.glob("csrc/*.c")) - {"csrc/channel.c"})
core = Extension(
    "shoal._store._core",
    sources=["src/shoal/_store/_core.pyx", *store_sources],
    include_dirs=["csrc"],
    define_macros=macros,
    extra_compile_args=cflags,
    extra_link_args=ldflags,
    libraries=["pthread"],
)
files = Extension(
    "shoal._store._files",
    sources=["src/shoal/_store/_files.pyx"],
    extra_compile_args=cflags,
    extra_link_args=ldflags,
)
channel = Extension(
    "shoal._channel",
    sources=["src/shoal/_channel.pyx", "csrc/channel.c"],
    include_dirs=["csrc"],
    extra_compile_args=cflags,
    extra_link_args=ldflags,
)

setup(
    ext_modules=cythonize(
        [core, files, channel],
        compiler_directives={"language_level": "3"},
        include_path=["src"],
    ),
)
