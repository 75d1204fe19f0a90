import logging

import pytest
import torch

from egg_zoo_discritune.config import parse_config
from egg_zoo_discritune.precision import bf16_matmul_speedup, cpu_flags, resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
AVX2_ONLY = {"fma", "avx", "avx2"}


FAST, SLOW = (lambda: 2.0), (lambda: 0.6)  # measured bf16/fp32 speed ratios


@pytest.mark.parametrize("flags, speedup, expected", [
    (AVX2_ONLY, FAST, "fp32"),  # emulated: not even measured
    (AVX2_ONLY | {"avx512f", "avx512bw"}, FAST, "fp32"),  # AVX-512 without its bf16 instructions still emulates
    (AVX2_ONLY | {"avx512f", "avx512_bf16"}, FAST, "bf16"),
    (AVX2_ONLY | {"avx512f", "avx512_bf16"}, SLOW, "fp32"),  # the instructions, but slower (bench/README.md)
    (AVX2_ONLY | {"amx_tile", "amx_bf16", "amx_int8"}, FAST, "bf16"),
    (set(), FAST, "fp32"),  # flags unknown: the safe choice
])
def test_auto_on_cpu_follows_the_flags_and_the_measured_speed(flags, speedup, expected, caplog):
    measured = []

    def probe():
        measured.append(True)
        return speedup()

    with caplog.at_level(logging.INFO, logger="egg_zoo_discritune.precision"):
        assert resolve_precision("auto", CPU, flags, speedup=probe) == expected
    assert f"precision auto: {expected}" in caplog.text
    assert bool(measured) == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_the_speed_probe_compares_real_matrix_products():
    assert 0 < bf16_matmul_speedup(repeats=1) < 100


@pytest.mark.parametrize("capability, expected", [((7, 0), "fp32"), ((7, 5), "fp32"), ((8, 0), "bf16"),
                                                  ((9, 0), "bf16")])
def test_auto_on_cuda_follows_the_compute_capability(capability, expected):
    assert resolve_precision("auto", CUDA, cuda_capability=capability) == expected


def test_explicit_bf16_where_it_is_slower_warns_once_with_the_measured_speed_and_is_kept(caplog):
    with caplog.at_level(logging.INFO, logger="egg_zoo_discritune.precision"):
        assert resolve_precision("bf16", CPU, AVX2_ONLY, speedup=lambda: 0.05) == "bf16"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "emulated" in warnings[0].getMessage() and "0.05x the fp32 speed" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="egg_zoo_discritune.precision"):
        assert resolve_precision("bf16", CPU, AVX2_ONLY | {"avx512_bf16"}, speedup=FAST) == "bf16"
        assert resolve_precision("bf16", CUDA, cuda_capability=(7, 0)) == "bf16"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]  # only the V100-class GPU warns


def test_explicit_fp32_and_fp16(caplog):
    assert resolve_precision("fp32", CPU, AVX2_ONLY | {"avx512_bf16"}) == "fp32"
    assert resolve_precision("fp16", CUDA, cuda_capability=(8, 0)) == "fp16"
    with caplog.at_level(logging.WARNING, logger="egg_zoo_discritune.precision"):
        assert resolve_precision("fp16", CPU, AVX2_ONLY) == "fp32"
    assert "fp16 needs a CUDA device" in caplog.text
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", CPU, AVX2_ONLY)


def test_cpu_flags_read_the_cpuinfo_format(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpu = "flags\t\t: fpu avx2 avx512_bf16\n"
    cpuinfo.write_text(f"processor\t: 0\n{cpu}\nprocessor\t: 1\n{cpu}")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_auto_is_the_default_and_the_paper_presets_pin_fp32():
    assert parse_config([]).egg.precision == "auto"
    for preset in ("paper-coco", "paper-concap", "paper-blip", "demo"):
        assert parse_config(["--preset", preset]).egg.precision == "fp32"
    assert parse_config(["--preset", "paper-coco", "--precision", "auto"]).egg.precision == "auto"
