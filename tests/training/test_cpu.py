"""CPU detection from /proc/cpuinfo texts of real machines and the oneDNN ISA cap."""

import pytest

from simsiam_tf.training import cpu

# First processor blocks as Linux prints them (flags trimmed to a representative set).
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8

processor\t: 1
vendor_id\t: SomethingElse
model name\t: not the first processor
flags\t\t: fpu
"""
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni vaes
"""
ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 fma avx avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid sve bf16 i8mm
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
"""
NO_ENV = {}


def test_intel_with_amx_is_native_bf16_and_fp16():
    info = cpu.describe(SAPPHIRE_RAPIDS, environ=NO_ENV, machine="x86_64", threads=4)
    assert (info.vendor, info.family, info.model) == ("GenuineIntel", "6", "143")
    assert info.model_name == "Intel(R) Xeon(R) Platinum 8480+"
    assert info.native_bf16 and info.native_fp16
    assert info.effective_isa == "AVX10_1_512_AMX"
    summary = info.summary()
    assert summary["cpu_flags"] == ["amx_bf16", "amx_tile", "avx2", "avx512_bf16", "avx512_fp16", "avx512f", "fma"]
    assert summary["threads"] == 4 and summary["isa_cap"] is None


def test_zen3_has_no_native_16bit():
    info = cpu.describe(ZEN3, environ=NO_ENV, machine="x86_64", threads=2)
    assert (info.vendor, info.family, info.model) == ("AuthenticAMD", "25", "1")
    assert not info.native_bf16 and not info.native_fp16
    assert info.effective_isa == "AVX2"
    assert info.summary()["cpu_flags"] == ["avx2", "fma"]


def test_zen4_is_native_bf16_but_not_fp16():
    info = cpu.describe(ZEN4, environ=NO_ENV, machine="x86_64", threads=2)
    assert info.native_bf16 and not info.native_fp16
    assert info.effective_isa == "AVX512_CORE_BF16"


@pytest.mark.parametrize(
    "cap, bf16, isa",
    [
        ("AVX2", False, "AVX2"),
        ("avx512_core", False, "AVX512_CORE"),
        ("AVX512_CORE_VNNI", False, "AVX512_CORE_VNNI"),
        ("AVX512_CORE_BF16", True, "AVX512_CORE_BF16"),
        ("AVX512_CORE_AMX", True, "AVX10_1_512_AMX"),  # old spelling of AVX10_1_512_AMX
        ("ALL", True, "AVX10_1_512_AMX"),  # not a cap
    ],
)
def test_isa_cap_below_avx512_core_bf16_turns_native_bf16_off(cap, bf16, isa):
    info = cpu.describe(SAPPHIRE_RAPIDS, environ={"ONEDNN_MAX_CPU_ISA": cap}, machine="x86_64", threads=2)
    assert info.native_bf16 is bf16
    assert info.effective_isa == isa


def test_fp16_needs_a_cap_at_avx10_1_or_above():
    capped = cpu.describe(SAPPHIRE_RAPIDS, environ={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, machine="x86_64")
    assert capped.native_bf16 and not capped.native_fp16


def test_older_dnnl_variable_is_read_too():
    info = cpu.describe(ZEN4, environ={"DNNL_MAX_CPU_ISA": "AVX2"}, machine="x86_64")
    assert info.isa_cap == "AVX2" and not info.native_bf16


def test_onednn_off_makes_bf16_emulated():
    info = cpu.describe(ZEN4, environ={"TF_ENABLE_ONEDNN_OPTS": "0"}, machine="x86_64")
    assert not info.native_bf16
    assert "TF_ENABLE_ONEDNN_OPTS=0" in cpu.emulated_precision_warning("mixed_bfloat16", info)


def test_arm_bf16_from_features_line():
    info = cpu.describe(GRAVITON3, environ=NO_ENV, machine="aarch64", threads=2)
    assert info.vendor == "0x41" and info.family == "8" and info.model == "0xd40"
    assert info.native_bf16 and info.effective_isa == "sve"
    no_bf16 = cpu.describe(GRAVITON3.replace(" bf16", ""), environ=NO_ENV, machine="aarch64")
    assert not no_bf16.native_bf16


def test_unknown_cpu_counts_as_no_native_16bit():
    info = cpu.describe(None, environ=NO_ENV, machine="arm64", threads=8)
    assert not info.known and not info.native_bf16 and not info.native_fp16
    assert info.effective_isa == "unknown" and info.summary()["cpu_flags"] == []
    assert info.vendor == "unknown" and info.threads == 8


def test_emulated_precision_warning():
    zen3 = cpu.describe(ZEN3, environ=NO_ENV, machine="x86_64")
    message = cpu.emulated_precision_warning("mixed_bfloat16", zen3)
    assert "AMD EPYC 7B13" in message and "emulated" in message and "--precision=float32" in message
    assert cpu.emulated_precision_warning("float32", zen3) is None
    assert cpu.emulated_precision_warning("mixed_bfloat16", zen3, on_gpu=True) is None
    zen4 = cpu.describe(ZEN4, environ=NO_ENV, machine="x86_64")
    assert cpu.emulated_precision_warning("mixed_bfloat16", zen4) is None
    capped = cpu.describe(ZEN4, environ={"ONEDNN_MAX_CPU_ISA": "AVX2"}, machine="x86_64")
    assert "ISA capped at AVX2" in cpu.emulated_precision_warning("mixed_bfloat16", capped)


def test_host_follows_the_environment(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert cpu.host().isa_cap == "AVX2" and not cpu.native_bf16()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert cpu.host().isa_cap == ""
    assert cpu.host().threads >= 1


def test_native_16bit_rejects_other_dtypes():
    with pytest.raises(ValueError, match="not a 16-bit float dtype: 'float32'"):
        cpu.native_16bit("float32")
