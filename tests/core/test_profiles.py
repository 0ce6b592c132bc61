import numpy as np
import pandas as pd
import pytest

from harness.core.errors import InputError
from harness.core.pool_config import PoolConfig
from harness.core.prices import load_prices
from harness.core.profiles import Profile
from tests.conftest import make_profile_frame


def test_shipped_profile_has_paper_types_and_models(shipped_profile):
    assert shipped_profile.instance_types == ["c5n.2xlarge", "g4dn.xlarge", "r5n.large", "t3.xlarge"]
    assert shipped_profile.models == ["mtwnd", "ncf", "rm2", "wnd"]
    # the authors dropped the single largest of 100 samples per bucket
    assert len(shipped_profile.table("g4dn.xlarge", "rm2").samples_ms[0]) == 99


def test_batch_rounds_up_to_next_bucket(fixed_profile):
    assert fixed_profile.mean_ms("fast", "m", 1) == 10.0
    assert fixed_profile.mean_ms("fast", "m", 100) == 10.0
    assert fixed_profile.mean_ms("fast", "m", 101) == 20.0
    assert fixed_profile.mean_ms("slow", "m", 201) == 400.0


def test_mean_percentile_sample_agree_with_raw_data():
    frame = make_profile_frame({("t", "m"): {10: [1.0, 2.0, 3.0, 4.0, 100.0]}})
    prof = Profile.from_frame(frame, drop_max=True)
    assert prof.mean_ms("t", "m", 10) == pytest.approx(2.5)
    assert prof.percentile_ms("t", "m", 10, 50) == pytest.approx(2.5)
    draws = {prof.sample_ms("t", "m", 10, np.random.default_rng(s)) for s in range(200)}
    assert draws == {1.0, 2.0, 3.0, 4.0}


def test_service_time_is_compute_plus_load():
    frame = pd.DataFrame(
        {
            "instance_type": ["t"],
            "model": ["m"],
            "batch_size": [10],
            "sample": [0],
            "compute_ms": [3.0],
            "load_ms": [1.5],
        }
    )
    assert Profile.from_frame(frame, drop_max=False).mean_ms("t", "m", 5) == 4.5


@pytest.mark.parametrize(
    "args, needle",
    [
        (("p3.2xlarge", "rm2", 10), "unknown instance type 'p3.2xlarge'"),
        (("g4dn.xlarge", "bert", 10), "unknown model 'bert'"),
        (("g4dn.xlarge", "rm2", 1001), "batch size 1001 outside the profiled range 1..1000"),
    ],
)
def test_profile_lookup_errors_are_clear(shipped_profile, args, needle):
    with pytest.raises(InputError, match=needle):
        shipped_profile.mean_ms(*args)


def test_user_profile_validation_names_column_and_row(tmp_path):
    frame = make_profile_frame({("t", "m"): {10: [1.0, 2.0]}})
    frame.loc[1, "compute_ms"] = -1
    path = tmp_path / "p.parquet"
    frame.to_parquet(path)
    with pytest.raises(InputError, match=r"p.parquet: column 'compute_ms', row 2"):
        Profile.load(path)
    frame.drop(columns=["load_ms"]).to_parquet(path)
    with pytest.raises(InputError, match="missing column.*'load_ms'"):
        Profile.load(path)


def test_prices_and_pool_cost():
    prices = load_prices()
    pool = PoolConfig.parse("g4dn.xlarge=2,r5n.large=9")
    assert pool.cost_per_h(prices) == pytest.approx(2 * 0.526 + 9 * 0.149)
    assert pool.instance_types[:3] == ["g4dn.xlarge", "g4dn.xlarge", "r5n.large"]
    with pytest.raises(InputError, match="no price"):
        PoolConfig.parse("unknown=1").cost_per_h(prices)


@pytest.mark.parametrize("text", ["", "a=x", "a=-1", "=3"])
def test_pool_config_rejects_bad_text(text):
    with pytest.raises(InputError):
        PoolConfig.parse(text)
