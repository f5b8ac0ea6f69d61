"""The search space: Hydra's sweep grammar into Optuna distributions, and the one-line errors for bad strings."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from ssl_train.errors import SSLTrainError
from ssl_train.sweep.space import command, direction, parse_space
from ssl_train.sweep.sweeper import consecutive, hydra_value


def test_hydra_sweeps_become_optuna_distributions():
    space = parse_space({"algorithm.threshold": "interval(0.8, 0.97)", "optimizer.lr": "tag(log, interval(0.003, 0.1))",
                         "model": "choice(mlp, cnn_small)", "data.mu": "range(1, 8, 2)", "algorithm.lambda_u": 2.0},
                        ["hparams_search=fixmatch", "seed=0,1", "algorithm.threshold=0.9"])
    assert space.distributions == {
        "optimizer.lr": FloatDistribution(0.003, 0.1, log=True),
        "model": CategoricalDistribution(["mlp", "cnn_small"]),
        "data.mu": IntDistribution(1, 7, step=2),  # Hydra's range stops before 8, as Python's
        "seed": CategoricalDistribution([0, 1]),  # a sweep on the command line joins the space
    }
    # a plain value passes to every trial; one on the command line takes its key out of the configured space
    assert space.fixed == ["algorithm.lambda_u=2.0", "hparams_search=fixmatch", "algorithm.threshold=0.9"]
    samples = space.samples()  # both ends and every choice, to compose before any trial runs
    assert {s["model"] for s in samples} == {"mlp", "cnn_small"} and {s["data.mu"] for s in samples} == {1, 7}


def test_a_trial_is_a_command_line_to_paste():
    line = command(["hparams_search=fixmatch", "model.hidden=[64,64]"],
                   {"optimizer.lr": 0.012345678901234, "model": "mlp"})
    assert line == "ssl-train hparams_search=fixmatch 'model.hidden=[64,64]' optimizer.lr=0.012345678901234 model=mlp"
    assert hydra_value({"a": "x'y", "b": None, "c": True, "d": {"e": 1}}) == "{a:'x\\'y',b:null,c:true,d:{e:1}}"
    assert consecutive([3, 4, 7, 8, 9, 2]) == [slice(0, 2), slice(2, 5), slice(5, 6)]


@pytest.mark.parametrize("params, message", [
    ({"algorithm.threshold": "interval(0.8)"}, "hydra.sweeper.params.algorithm.threshold='interval(0.8)': not a Hydra "
                                               "override or sweep (interval(a, b), tag(log, interval(a, b)), choice("),
    ({"algorithm.threshold": "interval(0.97, 0.8)"}, "hydra.sweeper.params.algorithm.threshold='interval(0.97, 0.8)': "
                                                     "`low <= high` must hold"),
    ({"optimizer.lr": "tag(log, interval(0, 0.1))"}, "hydra.sweeper.params.optimizer.lr='tag(log, interval(0, 0.1))': "
                                                     "`low > 0` must hold for `log=True`"),
    ({"data.mu": "glob(*)"}, "hydra.sweeper.params.data.mu='glob(*)': not a sweep the Optuna sweeper can sample"),
    ({"model": "choice()"}, "hydra.sweeper.params.model='choice()': not a Hydra override or sweep"),
])
def test_a_bad_search_space_string_is_one_line_naming_it(params, message):
    with pytest.raises(SSLTrainError) as raised:
        parse_space(params, [])
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value), str(raised.value)


def test_a_bad_direction_is_one_line():
    assert direction("minimize") == "minimize"
    with pytest.raises(SSLTrainError, match=r"^hydra.sweeper.direction='up': expected maximize or minimize$"):
        direction("up")
