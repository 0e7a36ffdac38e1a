"""Link-time stand-ins for the CUDA libraries candle's CUDA backend links against (`cudarc`'s `dynamic-linking`):
the driver (libcuda.so.1, which no wheel ships) and cuBLAS, cuBLASLt, cuRAND, NVRTC and the runtime (whose wheels
are ~700 MB). Each stub exports every function cudarc declares for that library, as an empty function, under the
real library's soname; the binary records only those sonames, and on a GPU machine the dynamic loader binds them
to the real libraries (the driver's and the CUDA 13 wheels PyTorch brings; `LD_LIBRARY_PATH` names their folders).
A stub is never run: nothing here can call the GPU.

    python3 scripts/cuda_stubs.py OUT_DIR       (scripts/cuda_env.sh calls it; cudarc's sources are read from
                                                 cargo's registry, the versions Cargo.lock names, after `cargo fetch`)
"""
import glob
import os
import re
import subprocess
import sys
import tarfile
import tempfile

# cudarc's module -> (link name, soname of CUDA 13's library).
LIBS = {
    "driver": ("cuda", "libcuda.so.1"),
    "cublas": ("cublas", "libcublas.so.13"),
    "cublaslt": ("cublasLt", "libcublasLt.so.13"),
    "curand": ("curand", "libcurand.so.10"),
    "nvrtc": ("nvrtc", "libnvrtc.so.13"),
    "runtime": ("cudart", "libcudart.so.13"),
}


def sources():
    """`read(module)` -> the text of `src/<module>/sys/mod.rs` of each cudarc version in Cargo.lock."""
    lock = open(os.path.join(os.path.dirname(__file__), "..", "Cargo.lock")).read()
    versions = re.findall(r'name = "cudarc"\nversion = "([^"]+)"', lock)
    registry = os.path.join(os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")), "registry")
    readers = []
    for v in versions:
        crates = glob.glob(os.path.join(registry, "cache", "*", f"cudarc-{v}.crate"))
        if not crates:
            sys.exit(f"cuda_stubs: cudarc {v} is not in {registry}/cache: run `cargo fetch --locked` first")
        tar = tarfile.open(crates[0])
        readers.append(lambda m, tar=tar, v=v: tar.extractfile(f"cudarc-{v}/src/{m}/sys/mod.rs").read().decode())
    return readers


def declared(text):
    """Names of the functions in the `extern "C"` blocks of a cudarc `sys/mod.rs`."""
    names = set()
    for block in re.finditer(r'extern "C" \{(.*?)\n\s*\}', text, re.S):
        names.update(re.findall(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(", block.group(1)))
    return names


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    readers = sources()
    for module, (link, soname) in LIBS.items():
        names = sorted(set().union(*(declared(read(module)) for read in readers)))
        if not names:
            sys.exit(f"cuda_stubs: no functions found for {module}: has cudarc's layout changed?")
        with tempfile.NamedTemporaryFile("w", suffix=".c", delete=False) as c:
            c.write("".join(f"void {n}(void) {{}}\n" for n in names))
        target = os.path.join(out, f"lib{link}.so")
        subprocess.run(["cc", "-shared", "-fPIC", "-o", target, c.name, f"-Wl,-soname,{soname}"], check=True)
        os.unlink(c.name)
        # Under its soname too, so a binary linked here can start on this machine (its CPU commands).
        if os.path.lexists(os.path.join(out, soname)):
            os.unlink(os.path.join(out, soname))
        os.symlink(f"lib{link}.so", os.path.join(out, soname))
        print(f"cuda_stubs: {target} ({soname}, {len(names)} functions)", file=sys.stderr)


if __name__ == "__main__":
    main()
