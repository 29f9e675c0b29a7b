"""Lengths bounded by the domain they act on, before any work: rmin and min_member_size of a
spec, of a sweep's --vary ranges and of a variant; a large rmin filters through the FFT with
the memory of the grid (the direct convolution asked for 25 GB at 200x100, rmin 200)."""

from __future__ import annotations

import resource

import pytest
import torch

from genai.design.filters import FFT_ABOVE, ConeFilter
from genai.design.problem import catalog_spec, discretize, load_spec, mbb
from genai.design.run import parse_vary, run_design, settings_for
from genai.errors import InputError


def test_rmin_and_member_size_are_bounded_by_the_largest_extent():
    load_spec({**mbb(64, 32), "rmin": 64})  # the bound itself is accepted
    with pytest.raises(InputError, match=r"rmin: 64\.5 is over the domain's largest extent \(64 elements\)"):
        load_spec({**mbb(64, 32), "rmin": 64.5})
    with pytest.raises(InputError, match=r"rmin: 100000 is over .*\(64 elements\)"):
        load_spec({**mbb(64, 64), "rmin": 100000})
    half = {**mbb(64, 32), "domain": {"size": [32, 16], "resolution": [64, 32]}}  # h = 0.5: lengths in units
    load_spec({**half, "min_member_size": 32})
    with pytest.raises(InputError, match=r"min_member_size: 33 is over .*\(32 in the spec's units\)"):
        load_spec({**half, "min_member_size": 33})


def test_vary_ranges_are_checked_at_their_high_end_before_the_sweep(tmp_path):
    spec = catalog_spec("mbb")  # 60 x 20
    assert parse_vary(["rmin=1.5:60"], spec) == {"rmin": (1.5, 60.0)}
    for item, text in (("rmin=5000:6000", "--vary rmin=5000:6000: 6000 is over the domain's largest extent "
                                          "(60 elements)"),
                       ("rmin=2:61", "61 is over"), ("min_member_size=1:121", "121 is over"),
                       ("rmin=0:3", "rmin must be positive")):
        with pytest.raises(InputError) as err:
            parse_vary([item], spec)
        assert text in str(err.value)
    with pytest.raises(InputError, match="rmin: 5000 is over"):  # a variant given in Python: before its work
        run_design(spec, tmp_path / "d", values={"rmin": 5000})
    assert not (tmp_path / "d").exists()
    problem = discretize(spec)
    with pytest.raises(InputError, match="min_member_size: 200 is over"):
        settings_for(spec, problem, {"min_member_size": 200})


@pytest.mark.parametrize("shape, rmin, fft", [((13, 7), 6.5, True), ((6, 5, 4), 3.7, True), ((12, 2), 2.5, False)])
def test_large_filters_go_through_the_fft_and_match_the_dense_filter(shape, rmin, fft):
    filt = ConeFilter(shape, rmin)  # the kernel stops where the grid does: (12, 2) needs 5 x 3 values
    assert (filt.kernel.numel() > FFT_ABOVE) == fft
    centres = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij"),
                          -1).reshape(-1, len(shape))
    H = (rmin - torch.cdist(centres, centres)).clamp(min=0)  # the dense reference: top88's H
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    want = (H @ x.reshape(-1)) / H.sum(1)
    torch.testing.assert_close(filt.density(x).reshape(-1), want, rtol=1e-12, atol=1e-12)


def test_the_largest_allowed_filter_needs_the_grids_memory_not_the_kernels():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    filt = ConeFilter((200, 100), 200.0)  # direct: 20,000 elements x 399^2 kernel values = 25 GB
    filt.density(torch.rand(200, 100, dtype=torch.float64))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 << 10  # KB: under 200 MB
