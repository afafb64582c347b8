#!/usr/bin/env bash
# What TwoBP builds and tests against:
# - OpenBLAS 0.3.34 as PyPI's scipy-openblas32 wheel ships it (symbols prefixed scipy_, a cblas.h and a
#   pkg-config file): it recognises current CPUs (Debian 12's 0.3.21 falls back to its generic kernel on
#   Sapphire Rapids and Zen 5, about 6x slower here), and sets BLAS threads per calling thread
#   (openblas_set_num_threads_local), which pipeline stages on threads of one process need;
# - Open MPI for multi-process pipelines (Debian packages), pkg-config, iproute2 (multi-host tests);
# - Python's safetensors + numpy (PyPI), the references the checkpoint format and the models are
#   cross-checked against.
# The wheel's library is linked into /usr/local/lib (ldconfig, so binaries load it without an rpath,
# which SwiftPM refuses from pkg-config) and described by /usr/local/lib/pkgconfig/scipy-openblas.pc,
# so a plain `swift build` finds and links it.
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
packages=(libopenmpi-dev openmpi-bin pkg-config iproute2)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
blas_version=0.3.34.481.3
if ! python3 -c "import safetensors, numpy, scipy_openblas32, sys; sys.exit(scipy_openblas32.__version__ != '$blas_version')" 2>/dev/null; then
    python3 -m pip install --quiet safetensors numpy "scipy-openblas32==$blas_version"
fi
library=$(python3 -c "import scipy_openblas32 as b, os; print(os.path.join(b.get_lib_dir(), 'lib' + b.get_library() + '.so'))")
include=$(python3 -c "import scipy_openblas32 as b; print(b.get_include_dir())")
if [ "$(readlink /usr/local/lib/libscipy_openblas.so 2>/dev/null)" != "$library" ]; then
    $sudo mkdir -p /usr/local/lib/pkgconfig
    $sudo ln -sf "$library" /usr/local/lib/libscipy_openblas.so
    $sudo ldconfig
fi
pc=/usr/local/lib/pkgconfig/scipy-openblas.pc
wanted="includedir=$include
Name: scipy-openblas
Description: OpenBLAS $blas_version from PyPI's scipy-openblas32 (symbols prefixed scipy_)
Version: $blas_version
Libs: -L/usr/local/lib -lscipy_openblas
Cflags: -I\${includedir}"
if [ "$(cat "$pc" 2>/dev/null)" != "$wanted" ]; then
    printf '%s\n' "$wanted" | $sudo tee "$pc" > /dev/null
fi
