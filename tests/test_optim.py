"""Optimisers and learning-rate schedules take exactly PyTorch's steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from numcnn.errors import ConfigError, NumcnnError, StateError
from numcnn import Sequential
from numcnn.layers import Dense, Parameter
from numcnn.optim import SGD, Adam, AdamW, CosineLR, StepLR, make_schedule
from conftest import DTYPE_IDS, DTYPES, assert_close, tt

SHAPES = [(4, 3), (3,), (2, 2, 3, 3)]
N_STEPS = 5


def make_params(dtype, seed=0):
    r = np.random.default_rng(seed)
    return [Parameter(r.standard_normal(s).astype(dtype), f"p{i}") for i, s in enumerate(SHAPES)]


def grads_for_step(step, dtype):
    r = np.random.default_rng(100 + step)
    return [r.standard_normal(s).astype(dtype) for s in SHAPES]


def run_against_torch(make_numcnn, make_torch, dtype, steps=N_STEPS):
    """Take ``steps`` steps with identical gradients in numcnn and torch; compare every step."""
    params = make_params(dtype)
    tparams = [tt(p.value, requires_grad=True) for p in params]
    opt = make_numcnn(params)
    topt = make_torch(tparams)
    for step in range(steps):
        for p, tp, g in zip(params, tparams, grads_for_step(step, dtype)):
            p.grad = g.copy()
            tp.grad = tt(g)
        opt.step()
        topt.step()
        for i, (p, tp) in enumerate(zip(params, tparams)):
            assert p.value.dtype == dtype
            assert_close(p.value, tp, dtype, what=f"step {step} param {i}")
    return params, opt


# -- plain SGD: the deck's w <- w - lr * dL/dw ------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sgd_without_momentum_moves_each_weight_by_exactly_minus_lr_times_grad(dtype):
    params = make_params(dtype)
    lr = 0.037
    opt = SGD(params, lr=lr)
    for step in range(3):
        old = [p.value.copy() for p in params]
        grads = grads_for_step(step, dtype)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        for p, w, g in zip(params, old, grads):
            assert p.value.dtype == dtype
            assert np.array_equal(p.value, w - dtype(lr) * g)


def test_sgd_weight_decay_without_momentum_is_exact_l2_step():
    params = make_params(np.float64)
    opt = SGD(params, lr=0.1, weight_decay=0.01)
    old = [p.value.copy() for p in params]
    grads = grads_for_step(0, np.float64)
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    for p, w, g in zip(params, old, grads):
        assert np.array_equal(p.value, w - 0.1 * (g + 0.01 * w))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("momentum,nesterov,wd", [
    (0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 0.0), (0.5, False, 1e-2),
    (0.9, True, 5e-3), (0.0, False, 1e-1)])
def test_sgd_matches_torch_sgd_over_5_steps(momentum, nesterov, wd, dtype):
    run_against_torch(
        lambda ps: SGD(ps, lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=wd),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=momentum, nesterov=nesterov,
                                   weight_decay=wd),
        dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("lr,betas,eps,wd", [
    (1e-3, (0.9, 0.999), 1e-8, 0.0), (1e-2, (0.8, 0.99), 1e-6, 0.0),
    (5e-3, (0.9, 0.999), 1e-8, 1e-2)])
def test_adam_matches_torch_adam_over_5_steps(lr, betas, eps, wd, dtype):
    run_against_torch(lambda ps: Adam(ps, lr=lr, betas=betas, eps=eps, weight_decay=wd),
                      lambda ps: torch.optim.Adam(ps, lr=lr, betas=betas, eps=eps, weight_decay=wd),
                      dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("lr,wd", [(1e-3, 1e-2), (1e-2, 0.1), (3e-3, 0.0)])
def test_adamw_matches_torch_adamw_over_5_steps(lr, wd, dtype):
    run_against_torch(lambda ps: AdamW(ps, lr=lr, weight_decay=wd),
                      lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=wd),
                      dtype)


def test_adamw_default_weight_decay_matches_torch_default():
    run_against_torch(lambda ps: AdamW(ps), lambda ps: torch.optim.AdamW(ps), np.float64)


def test_adam_first_step_moves_each_weight_by_about_lr():
    """With bias correction Adam's first step is lr * g / (|g| + eps'): about lr per entry."""
    params = make_params(np.float64)
    old = [p.value.copy() for p in params]
    for p, g in zip(params, grads_for_step(0, np.float64)):
        p.grad = g
    Adam(params, lr=0.01).step()
    for p, w in zip(params, old):
        np.testing.assert_allclose(np.abs(p.value - w), 0.01, rtol=1e-5)


def test_optimizer_skips_parameters_without_gradient():
    params = make_params(np.float64)
    before = params[1].value.copy()
    params[0].grad = np.ones_like(params[0].value)
    params[2].grad = np.ones_like(params[2].value)
    for opt in (SGD(params, lr=0.1, momentum=0.9), Adam(params)):
        opt.step()
        assert np.array_equal(params[1].value, before)


def _has_grad(step, i):
    """Which parameters get a gradient at which step: parameter 1 first at step 2, parameter 2
    every other step, parameter 0 always."""
    return i == 0 or (i == 1 and step >= 2) or (i == 2 and step % 2 == 1)


def _steps_with_missing_grads(opt, topt, params, tparams, steps, first=0):
    for step in range(first, first + steps):
        for i, (p, tp, g) in enumerate(zip(params, tparams, grads_for_step(step, np.float64))):
            p.grad = g.copy() if _has_grad(step, i) else None
            tp.grad = tt(g) if _has_grad(step, i) else None
        opt.step()
        topt.step()
        for i, (p, tp) in enumerate(zip(params, tparams)):
            assert_close(p.value, tp, np.float64, what=f"step {step} param {i}")


@pytest.mark.parametrize("make,tmake", [
    (lambda ps: Adam(ps, lr=0.1), lambda ps: torch.optim.Adam(ps, lr=0.1)),
    (lambda ps: AdamW(ps, lr=0.1), lambda ps: torch.optim.AdamW(ps, lr=0.1)),
    (lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9))],
    ids=["adam", "adamw", "sgd"])
def test_parameters_that_miss_gradients_on_some_steps_match_torch(make, tmake):
    """Adam's bias correction counts each parameter's own updates (PyTorch's per-parameter
    ``step``): a parameter that first gets a gradient at step 3 takes a first step's size."""
    params = make_params(np.float64)
    tparams = [tt(p.value, requires_grad=True) for p in params]
    opt, topt = make(params), tmake(tparams)
    _steps_with_missing_grads(opt, topt, params, tparams, 6)
    assert opt.steps == 6 and opt.param_steps == [6, 4, 3]


def test_adam_state_restored_with_per_parameter_step_counts_continues_like_torch():
    params = make_params(np.float64)
    tparams = [tt(p.value, requires_grad=True) for p in params]
    opt, topt = Adam(params, lr=0.05), torch.optim.Adam(tparams, lr=0.05)
    _steps_with_missing_grads(opt, topt, params, tparams, 3)
    fresh = Adam(params, lr=0.05)                 # e.g. a resumed run
    fresh.load_state_arrays({k: v.copy() for k, v in opt.state_arrays().items()}, opt.steps,
                            opt.lr, opt.param_steps)
    _steps_with_missing_grads(fresh, topt, params, tparams, 3, first=3)
    with pytest.raises(StateError, match="step counts for 2 parameters"):
        fresh.load_state_arrays(opt.state_arrays(), 3, 0.05, [3, 1])


@pytest.mark.parametrize("make,damage,message", [
    (Adam, lambda a: {k: v for k, v in a.items() if not k.startswith("0.")},
     "parameter 0 lacks m, v after 2 update"),
    (Adam, lambda a: {k: v for k, v in a.items() if k != "2.v"}, "parameter 2 lacks v after 2"),
    (Adam, lambda a: {**a, "1.v": -a["1.v"] - 1}, r"'1\.v' .* has negative entries"),
    (Adam, lambda a: {**a, "1.m": np.full_like(a["1.m"], np.nan)}, r"'1\.m' holds NaN or inf"),
    (lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda a: {}, "parameter 0 lacks momentum"),
    (lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda a: {**a, "0.momentum": a["0.momentum"] * np.inf},
     "holds NaN or inf")])
def test_damaged_or_incomplete_optimizer_state_is_refused_and_nothing_changes(make, damage, message):
    params = make_params(np.float64)
    opt = make(params)
    for step in range(2):
        for p, g in zip(params, grads_for_step(step, np.float64)):
            p.grad = g
        opt.step()
    state = {k: v.copy() for k, v in opt.state_arrays().items()}
    fresh = make(params)
    with pytest.raises(StateError, match=message):
        fresh.load_state_arrays(damage(state), opt.steps, opt.lr)
    assert fresh.state == [{} for _ in params] and fresh.steps == 0
    fresh.load_state_arrays(state, opt.steps, opt.lr)           # the undamaged state loads
    assert fresh.param_steps == [2, 2, 2]


def test_sgd_without_momentum_has_no_state_to_miss():
    params = make_params(np.float64)
    opt = SGD(params, lr=0.1)
    opt.load_state_arrays({}, 5)
    assert opt.param_steps == [5, 5, 5]


# -- zero_grad and misuse ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_zero_grad_clears_every_gradient(cls):
    params = make_params(np.float32)
    for p, g in zip(params, grads_for_step(0, np.float32)):
        p.grad = g
    opt = cls(params, lr=0.01)
    opt.step()
    opt.zero_grad()
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_step_without_any_gradient_raises_state_error(cls):
    params = make_params(np.float32)
    before = [p.value.copy() for p in params]
    opt = cls(params, lr=0.01)
    with pytest.raises(StateError) as info:
        opt.step()
    assert isinstance(info.value, NumcnnError) and isinstance(info.value, ValueError)
    assert "step" in str(info.value)
    assert all(np.array_equal(p.value, b) for p, b in zip(params, before))
    # and again after zero_grad
    for p in params:
        p.grad = np.ones_like(p.value)
    opt.step()
    opt.zero_grad()
    with pytest.raises(StateError):
        opt.step()


def test_layer_gradients_accumulate_until_zero_grad_then_sgd_uses_them():
    layer = Dense(3, 2).astype(np.float64)
    x = np.random.default_rng(0).standard_normal((4, 3))
    g = np.ones((4, 2))
    for _ in range(2):
        layer.forward(x)
        layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * g.T @ x, rtol=1e-12)
    w = layer.weight.value.copy()
    opt = SGD(layer.parameters(), lr=0.5)
    opt.step()
    assert np.array_equal(layer.weight.value, w - 0.5 * layer.weight.grad)
    opt.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.0), lambda ps: SGD(ps, lr=-1.0), lambda ps: SGD(ps, lr=float("nan")),
    lambda ps: SGD(ps, lr=0.1, nesterov=True), lambda ps: SGD(ps, lr=0.1, momentum=-0.1),
    lambda ps: SGD(ps, lr=0.1, momentum=1.0), lambda ps: SGD(ps, lr=0.1, momentum=2.0),
    lambda ps: SGD(ps, lr=0.1, momentum=float("nan")),
    lambda ps: SGD(ps, lr=0.1, weight_decay=float("nan")),
    lambda ps: Adam(ps, betas=(1.0, 0.999)), lambda ps: Adam(ps, eps=0.0),
    lambda ps: SGD([], lr=0.1)])
def test_bad_optimizer_arguments_raise_config_error(make):
    with pytest.raises(ConfigError):
        make(make_params(np.float32))


# -- learning-rate schedules -------------------------------------------------------------------------
def _lrs(numcnn_sched, torch_sched, opt, topt, epochs=10):
    ours, theirs = [opt.lr], [topt.param_groups[0]["lr"]]
    for _ in range(epochs):
        topt.step()                     # an epoch's optimizer steps come before the schedule's
        torch_sched.step()
        numcnn_sched.step()
        ours.append(opt.lr)
        theirs.append(topt.param_groups[0]["lr"])
    return ours, theirs


def _pair_of_optimizers(lr):
    params = make_params(np.float64)
    tp = [tt(p.value, requires_grad=True) for p in params]
    for t in tp:
        t.grad = torch.zeros_like(t)
    return SGD(params, lr=lr), torch.optim.SGD(tp, lr=lr)


@pytest.mark.parametrize("step_size,gamma", [(3, 0.1), (1, 0.5), (4, 0.7)])
def test_step_lr_matches_torch_over_10_epochs(step_size, gamma):
    opt, topt = _pair_of_optimizers(0.1)
    ours, theirs = _lrs(StepLR(opt, step_size, gamma),
                        torch.optim.lr_scheduler.StepLR(topt, step_size, gamma), opt, topt)
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert ours[step_size] == pytest.approx(0.1 * gamma)


@pytest.mark.parametrize("t_max,eta_min", [(10, 0.0), (10, 1e-3), (7, 0.01)])
def test_cosine_lr_matches_torch_cosine_annealing_over_the_run(t_max, eta_min):
    opt, topt = _pair_of_optimizers(0.05)
    ours, theirs = _lrs(CosineLR(opt, t_max, eta_min),
                        torch.optim.lr_scheduler.CosineAnnealingLR(topt, t_max, eta_min),
                        opt, topt, epochs=t_max)
    assert ours == pytest.approx(theirs, rel=1e-10, abs=1e-15)
    assert ours[-1] == pytest.approx(eta_min, abs=1e-15)


@pytest.mark.parametrize("t_max,eta_min", [(3, 1e-3), (4, 0.0)])
def test_cosine_lr_past_t_max_rises_again_like_torch(t_max, eta_min):
    opt, topt = _pair_of_optimizers(0.1)
    ours, theirs = _lrs(CosineLR(opt, t_max, eta_min),
                        torch.optim.lr_scheduler.CosineAnnealingLR(topt, t_max, eta_min),
                        opt, topt, epochs=3 * t_max)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-15)
    assert ours[t_max + 1] > eta_min and ours[2 * t_max] == pytest.approx(0.1)


def test_make_schedule_step_divides_run_in_thirds_like_torch_step_lr():
    opt, topt = _pair_of_optimizers(0.1)
    sched = make_schedule("step", opt, epochs=9)
    ours, theirs = _lrs(sched, torch.optim.lr_scheduler.StepLR(topt, 3, 0.1), opt, topt, epochs=9)
    assert ours == pytest.approx(theirs, rel=1e-12)


@pytest.mark.parametrize("epochs,lrs", [(4, [0.1, 0.1, 0.01, 0.01]), (7, [0.1] * 3 + [0.01] * 3 + [0.001]),
                                         (2, [0.1, 0.01]), (1, [0.1])])
def test_make_schedule_step_drops_after_each_third_at_most_twice(epochs, lrs):
    opt, _ = _pair_of_optimizers(0.1)
    sched = make_schedule("step", opt, epochs=epochs)
    got = []
    for e in range(epochs):
        sched.set_epoch(e)
        got.append(opt.lr)
    assert got == pytest.approx(lrs, rel=1e-12)


def test_make_schedule_constant_and_unknown():
    opt, _ = _pair_of_optimizers(0.1)
    s = make_schedule("constant", opt, 5)
    for _ in range(5):
        s.step()
    assert opt.lr == 0.1
    with pytest.raises(ConfigError):
        make_schedule("exponential", opt, 5)


def test_sgd_uses_the_scheduled_learning_rate():
    params = make_params(np.float64)
    opt = SGD(params, lr=0.1)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    w = params[0].value.copy()
    params[0].grad = np.ones_like(w)
    opt.step()
    assert np.array_equal(params[0].value, w - 0.05 * np.ones_like(w))


# -- argument checking: each bad value is a ConfigError naming the argument and its range ------------
NAN, INF = float("nan"), float("inf")
BAD_OPTIMIZER_ARGUMENTS = {
    "momentum str": (lambda ps: SGD(ps, momentum="0.9"), r"SGD: momentum must be in \[0, 1\), got '0\.9'"),
    "momentum None": (lambda ps: SGD(ps, momentum=None), r"SGD: momentum must be in \[0, 1\), got None"),
    "sgd weight_decay inf": (lambda ps: SGD(ps, weight_decay=INF), "SGD: weight_decay must be a finite number >= 0, got inf"),
    "sgd weight_decay str": (lambda ps: SGD(ps, weight_decay="0"), "SGD: weight_decay must be a finite number >= 0"),
    "nesterov str": (lambda ps: SGD(ps, momentum=0.9, nesterov="yes"), "SGD: nesterov must be True or False"),
    "lr str": (lambda ps: SGD(ps, lr="0.1"), "SGD: lr must be a positive finite number, got '0.1'"),
    "lr bool": (lambda ps: SGD(ps, lr=True), "SGD: lr must be a positive finite number, got True"),
    "lr inf": (lambda ps: Adam(ps, lr=INF), "Adam: lr must be a positive finite number, got inf"),
    "betas number": (lambda ps: Adam(ps, betas=0.9), r"Adam: betas must be a pair \(beta1, beta2\) of numbers in \[0, 1\).*got 0\.9"),
    "betas str": (lambda ps: Adam(ps, betas=("a", "b")), r"Adam: betas must be a pair .*got \('a', 'b'\)"),
    "betas string": (lambda ps: Adam(ps, betas="ab"), r"Adam: betas must be a pair .*got 'ab'"),
    "betas triple": (lambda ps: Adam(ps, betas=(0.9, 0.99, 0.9)), r"Adam: betas must be a pair .*got \(0\.9, 0\.99, 0\.9\)"),
    "betas nan": (lambda ps: AdamW(ps, betas=(NAN, 0.999)), r"AdamW: betas must be a pair .*in \[0, 1\)"),
    "betas None": (lambda ps: Adam(ps, betas=None), r"Adam: betas must be a pair .*got None"),
    "eps str": (lambda ps: Adam(ps, eps="x"), r"Adam: eps must be a positive finite number, got 'x' \(1e-08 is usual\)"),
    "eps nan": (lambda ps: Adam(ps, eps=NAN), "Adam: eps must be a positive finite number, got nan"),
    "adam weight_decay nan": (lambda ps: Adam(ps, weight_decay=NAN), "Adam: weight_decay must be a finite number >= 0, got nan"),
    "adamw weight_decay -1": (lambda ps: AdamW(ps, weight_decay=-1), "AdamW: weight_decay must be a finite number >= 0, got -1"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIMIZER_ARGUMENTS))
def test_bad_optimizer_argument_names_the_argument_and_its_range(case):
    make, message = BAD_OPTIMIZER_ARGUMENTS[case]
    with pytest.raises(ConfigError, match=message):
        make(make_params(np.float32))


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, weight_decay=float("inf")),
                                  lambda ps: Adam(ps, eps=float("nan")),
                                  lambda ps: Adam(ps, weight_decay=float("nan"))],
                         ids=["sgd-wd-inf", "adam-eps-nan", "adam-wd-nan"])
def test_non_finite_settings_are_refused_before_they_turn_weights_into_nan(make):
    """These were accepted and gave all-NaN weights on the first step."""
    params = make_params(np.float64)
    before = [p.value.copy() for p in params]
    with pytest.raises(ConfigError, match="must be a"):
        make(params)
    assert all(np.array_equal(p.value, w) for p, w in zip(params, before))


def test_optimizer_given_a_model_says_to_pass_its_parameters():
    model = Sequential([Dense(3, 2)])
    with pytest.raises(ConfigError, match=r"SGD: got a Sequential, not its parameters; pass model\.parameters\(\)"):
        SGD(model)
    with pytest.raises(ConfigError, match=r"Adam: got a Dense, not its parameters; pass model\.parameters\(\)"):
        Adam(model.layers[0])
    with pytest.raises(ConfigError, match=r"got one Parameter; pass a list"):
        SGD(model.parameters()[0])
    with pytest.raises(ConfigError, match="params must be a list of numcnn Parameters.*got int"):
        SGD(3)


def test_optimizer_refuses_a_list_of_arrays_at_construction_not_at_step():
    with pytest.raises(ConfigError, match="item 1 of the parameter list is ndarray, not a numcnn "
                                          "Parameter; the list must hold numcnn Parameters"):
        SGD([make_params(np.float32)[0], np.ones(3)])


@pytest.mark.parametrize("lr", [np.float32(0.25), np.float64(0.25), np.int64(1), 1, 0.25],
                         ids=["float32", "float64", "int64", "int", "float"])
def test_any_real_number_type_is_a_learning_rate(lr):
    """np.float32 was refused (with 'must be a positive number') while np.float64 passed."""
    params = make_params(np.float64)
    opt = SGD(params, lr=lr, momentum=np.float32(0.5), weight_decay=np.float16(0))
    assert type(opt.lr) is float and opt.lr == float(lr) and opt.momentum == 0.5
    w = params[0].value.copy()
    params[0].grad = np.full_like(w, 2.0)
    opt.step()
    assert np.array_equal(params[0].value, w - float(lr) * 2.0)
    adam = Adam(make_params(np.float64), lr=lr, betas=np.array([0.8, 0.99]), eps=np.float32(1e-8))
    assert adam.betas == (0.8, 0.99) and adam.lr == float(lr)


@pytest.mark.parametrize("make,message", [
    (lambda o: StepLR(o, "a"), "StepLR: step_size must be an int >= 1, got 'a'"),
    (lambda o: StepLR(o, 0), "StepLR: step_size must be an int >= 1, got 0"),
    (lambda o: StepLR(o, 2.5), "StepLR: step_size must be an int >= 1, got 2.5"),
    (lambda o: StepLR(o, 2, gamma="x"), r"StepLR: gamma must be a positive finite number, got 'x' \(0\.1 is usual\)"),
    (lambda o: StepLR(o, 2, gamma=float("nan")), "StepLR: gamma must be a positive finite number, got nan"),
    (lambda o: StepLR(o, 2, gamma=0), "StepLR: gamma must be a positive finite number, got 0"),
    (lambda o: CosineLR(o, None), "CosineLR: t_max must be an int >= 1, got None"),
    (lambda o: CosineLR(o, 0), "CosineLR: t_max must be an int >= 1, got 0"),
    (lambda o: CosineLR(o, 5, eta_min="0"), "CosineLR: eta_min must be a finite number >= 0, got '0'"),
    (lambda o: CosineLR(o, 5, eta_min=-1e-3), "CosineLR: eta_min must be a finite number >= 0"),
    (lambda o: StepLR("sgd", 2), r"StepLR: optimizer must be a numcnn optimizer \(SGD, Adam, AdamW\), got str"),
    (lambda o: CosineLR(None, 2), "CosineLR: optimizer must be a numcnn optimizer"),
    (lambda o: StepLR(o, 2).set_epoch("3"), "StepLR: epoch must be an int >= 0, got '3'"),
    (lambda o: make_schedule("step", o, None), "make_schedule: epochs must be an int >= 1, got None"),
], ids=["step-str", "step-0", "step-float", "gamma-str", "gamma-nan", "gamma-0", "tmax-none", "tmax-0",
        "eta-str", "eta-negative", "opt-str", "opt-none", "set-epoch-str", "epochs-none"])
def test_bad_schedule_arguments_name_the_argument_and_its_range(make, message):
    opt, _ = _pair_of_optimizers(0.1)
    with pytest.raises(ConfigError, match=message):
        make(opt)
    assert opt.lr == 0.1                                             # nothing was changed


def test_schedules_accept_numpy_numbers_and_compute_the_same_rates():
    opt, _ = _pair_of_optimizers(0.1)
    sched = StepLR(opt, np.int64(2), gamma=np.float32(0.5))
    lrs = []
    for _ in range(4):
        sched.step()
        lrs.append(opt.lr)
    assert lrs == pytest.approx([0.1, 0.05, 0.05, 0.025], rel=1e-12)
    opt, _ = _pair_of_optimizers(0.1)
    cos = CosineLR(opt, np.int32(4), eta_min=np.float64(0.02))
    cos.set_epoch(np.int64(4))
    assert opt.lr == pytest.approx(0.02, abs=1e-15)
