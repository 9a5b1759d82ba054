"""What the host CPU can do: model, ISA flags, threads, and whether 16-bit compute is native.

Read from `/proc/cpuinfo` on Linux; elsewhere only `platform` is known, and an unknown
CPU counts as having no native 16-bit arithmetic (the safe choice: an emulated bfloat16
path is several times slower than float32, never faster).

oneDNN, which runs TensorFlow's and PyTorch's CPU convolutions, can be capped below what
the CPU has with `ONEDNN_MAX_CPU_ISA` (e.g. `AVX2`, to see what an AVX2-only CPU would
run); a cap below `AVX512_CORE_BF16` leaves bfloat16 without native kernels, so
`native_bf16()` honours it. With `TF_ENABLE_ONEDNN_OPTS=0` TensorFlow runs its own
(Eigen) kernels, whose bfloat16 is emulated on every CPU.

No TensorFlow import here: the module is cheap, and the bench scripts call it before
TensorFlow starts.
"""

import dataclasses
import functools
import os
import platform

# The flags that decide which kernels run (x86 names as in /proc/cpuinfo; Arm's "bf16"
# and "asimd"/"sve" as in its "Features" line).
FLAGS_THAT_MATTER = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_tile",
    "amx_fp16",
    "asimd",
    "sve",
    "bf16",
)

# oneDNN's `ONEDNN_MAX_CPU_ISA` values, lowest first (older spellings mapped onto the
# newer ones). Values not listed (e.g. ALL, DEFAULT, a typo) leave oneDNN uncapped.
ISA_ORDER = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX10_1_512",
    "AVX10_1_512_AMX",
    "AVX10_1_512_AMX_FP16",
)
_ISA_ALIASES = {
    "AVX512_CORE_FP16": "AVX10_1_512",
    "AVX512_CORE_AMX": "AVX10_1_512_AMX",
    "AVX512_CORE_AMX_FP16": "AVX10_1_512_AMX_FP16",
}
_FIRST_BF16_ISA = "AVX512_CORE_BF16"
_FIRST_FP16_ISA = "AVX10_1_512"
_ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """The host CPU as the kernels see it."""

    model_name: str
    vendor: str
    family: str  # x86 "cpu family"; Arm "CPU architecture"; "" when unknown
    model: str  # x86 "model"; Arm "CPU part"; "" when unknown
    flags: frozenset
    threads: int
    machine: str  # platform.machine(): x86_64, aarch64, arm64, AMD64, ...
    isa_cap: str = ""  # effective ONEDNN_MAX_CPU_ISA cap ("" when none)
    onednn: bool = True  # TensorFlow's oneDNN kernels on (TF_ENABLE_ONEDNN_OPTS)
    known: bool = True  # False when the flags could not be read

    def has(self, flag):
        return flag in self.flags

    @property
    def is_arm(self):
        return self.machine.lower() in ("aarch64", "arm64")

    def _isa_allows(self, first):
        return not self.isa_cap or ISA_ORDER.index(self.isa_cap) >= ISA_ORDER.index(first)

    @property
    def native_bf16(self):
        """True when bfloat16 convolutions and matmuls run on native instructions here."""
        if not self.known or not self.onednn:
            return False
        if self.is_arm:
            return self.has("bf16")
        hardware = self.has("avx512_bf16") or self.has("amx_bf16")
        return hardware and self._isa_allows(_FIRST_BF16_ISA)

    @property
    def native_fp16(self):
        """True when float16 convolutions and matmuls run on native instructions here."""
        if not self.known or not self.onednn or self.is_arm:
            return False
        hardware = self.has("avx512_fp16") or self.has("amx_fp16")
        return hardware and self._isa_allows(_FIRST_FP16_ISA)

    @property
    def effective_isa(self):
        """The widest vector ISA the kernels may use: the hardware's, lowered by the cap."""
        if self.is_arm:
            return "sve" if self.has("sve") else ("asimd" if self.has("asimd") else "unknown")
        if self.has("amx_tile") and self.has("amx_bf16"):
            hardware = "AVX10_1_512_AMX"
        elif self.has("avx512_fp16"):
            hardware = "AVX10_1_512"
        elif self.has("avx512_bf16"):
            hardware = "AVX512_CORE_BF16"
        elif self.has("avx512f"):
            hardware = "AVX512_CORE"
        elif self.has("avx2"):
            hardware = "AVX2"
        elif self.has("avx"):
            hardware = "AVX"
        elif self.known:
            hardware = "SSE41"
        else:
            return "unknown"
        if self.isa_cap and ISA_ORDER.index(self.isa_cap) < ISA_ORDER.index(hardware):
            return self.isa_cap
        return hardware

    def summary(self):
        """A JSON-ready description, as the bench scripts print it."""
        return {
            "cpu_model": self.model_name,
            "cpu_vendor": self.vendor,
            "cpu_family": self.family,
            "cpu_model_number": self.model,
            "cpu_flags": sorted(f for f in FLAGS_THAT_MATTER if self.has(f)),
            "isa_cap": self.isa_cap or None,
            "effective_isa": self.effective_isa,
            "native_bf16": self.native_bf16,
            "threads": self.threads,
        }


def parse_cpuinfo(text):
    """The first processor's fields of a /proc/cpuinfo text: {name: value}, lower-case names."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # end of the first processor's block
            continue
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip().lower(), value.strip())
    return fields


def isa_cap_from_env(environ=None):
    """The ISA cap oneDNN will apply ("" when none), from ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA)."""
    environ = os.environ if environ is None else environ
    for name in _ISA_ENV:
        value = environ.get(name, "").strip().upper()
        if value:
            value = _ISA_ALIASES.get(value, value)
            return value if value in ISA_ORDER else ""
    return ""


def onednn_enabled(environ=None):
    """TensorFlow's oneDNN kernels are on unless TF_ENABLE_ONEDNN_OPTS is 0/false."""
    environ = os.environ if environ is None else environ
    return environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false", "no", "off")


def _thread_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def describe(cpuinfo_text=None, environ=None, machine=None, threads=None):
    """CpuInfo from a /proc/cpuinfo text (None: no such file) and an environment."""
    machine = machine if machine is not None else platform.machine()
    threads = threads if threads is not None else _thread_count()
    common = {
        "threads": threads,
        "machine": machine,
        "isa_cap": isa_cap_from_env(environ),
        "onednn": onednn_enabled(environ),
    }
    fields = parse_cpuinfo(cpuinfo_text) if cpuinfo_text else {}
    flag_text = fields.get("flags", fields.get("features"))
    if flag_text is None:
        return CpuInfo(
            model_name=platform.processor() or machine or "unknown",
            vendor="unknown",
            family="",
            model="",
            flags=frozenset(),
            known=False,
            **common,
        )
    return CpuInfo(
        model_name=fields.get("model name", fields.get("hardware", machine or "unknown")),
        vendor=fields.get("vendor_id", fields.get("cpu implementer", "unknown")),
        family=fields.get("cpu family", fields.get("cpu architecture", "")),
        model=fields.get("model", fields.get("cpu part", "")),
        flags=frozenset(flag_text.split()),
        **common,
    )


def _read_cpuinfo(path="/proc/cpuinfo"):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


@functools.cache
def _host(cap, onednn):
    del cap, onednn  # cache keys: the environment that shapes the answer
    return describe(_read_cpuinfo())


def host():
    """This machine's CpuInfo (cached per ISA cap / oneDNN setting of the environment)."""
    return _host(isa_cap_from_env(), onednn_enabled())


def native_bf16():
    """True when this CPU computes bfloat16 natively (and no cap or setting turns that off)."""
    return host().native_bf16


def native_16bit(dtype_name):
    """True when 16-bit `dtype_name` ("bfloat16" or "float16") is native on this CPU."""
    if dtype_name == "bfloat16":
        return host().native_bf16
    if dtype_name == "float16":
        return host().native_fp16
    raise ValueError(f"not a 16-bit float dtype: {dtype_name!r}; expected bfloat16 or float16")


def emulated_precision_warning(policy, info=None, on_gpu=False):
    """The warning for a mixed precision policy emulated on this CPU, or None when there is none."""
    info = info or host()
    if on_gpu or policy not in ("mixed_bfloat16", "mixed_float16"):
        return None
    dtype = "bfloat16" if policy == "mixed_bfloat16" else "float16"
    native = info.native_bf16 if dtype == "bfloat16" else info.native_fp16
    if native:
        return None
    why = f"ISA capped at {info.isa_cap}" if info.isa_cap else "no native instructions for it"
    if not info.onednn:
        why = "TF_ENABLE_ONEDNN_OPTS=0"
    return (
        f"precision {policy} on CPU {info.model_name!r} ({why}): {dtype} is emulated and runs "
        "several times slower than float32; use --precision=float32 on this machine"
    )
