"""LightGBM gender and age heads on cached bottleneck features.

    python -m training.heads fit --features F.npz --labels labels.csv --out DIR [--split]
    python -m training.heads score --heads DIR --features F.npz --labels labels.csv

`fit` trains two boosters on the rows of F.npz (from `training.bottlenecks`):

- gender: binary, on every face (unknown ages included);
- age: regression in years, on faces with a known age (1-100), optionally weighted
  per source (`--age-weight wiki=0.5`).

Hyperparameters come from an Optuna TPE search (seeded, with a median pruner); each
trial trains on an inner fold of the fitting rows and early-stops on the rest. The
best parameters are then scored by stratified k-fold cross-validation (CV scores in
heads.json), and the final booster is refitted on all fitting rows with the mean best
iteration count. `--timeout` bounds the whole fit (default 14 minutes): the searches
stop starting trials at their share of it, and CV runs as many folds as the best
trial's speed says fit in the rest (recorded in heads.json when fewer than --folds).
With `--split` only the train split of `training.splits` is fitted; the validation
split is then never seen, by the search included.

Residual mode (the default when the features hold the pretrained heads' outputs): the
boosters start from the pretrained backbone's own prediction instead of a constant,
i.e. LightGBM's init_score is the `age_mean` column for age and the `gender_logit`
column for gender, so the trees learn a correction. The prediction is then
`age = age_mean + raw_age`, `p_male = sigmoid(gender_logit + raw_gender)`; export/
lightgbm.py builds the same sum in ONNX. `--mode direct` fits from a constant. Either
way the age is clipped to `realtime.metadata.AGE_RANGE` (0-100 years), in the graph too.

`score` prints JSON metrics: gender accuracy, ROC AUC, age MAE/RMSE overall and per
source (by default on the validation split when the heads were fitted with --split,
so that training rows are never scored by accident).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# LightGBM's OpenMP threads spin while they wait; on a machine whose cores are busy with
# other work that made training 10-50x slower (measured: 200 rounds 101 s vs 2 s).
# Must be set before libgomp loads, i.e. before lightgbm is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from realtime.metadata import AGE_RANGE
from realtime.paths import git_commit
from training.bottlenecks import load_features
from training.labels import DEFAULT_LABELS, Labels, load_labels
from training.metrics import age_decades, age_metrics, decade_label, gender_metrics
from training.splits import DEFAULT_SEED, DEFAULT_VAL_FRACTION, rank_key, split_for_files, strata

GENDER_MODEL = "gender.txt"
AGE_MODEL = "age.txt"
HEADS_JSON = "heads.json"
MAX_ROUNDS = 5000
EARLY_STOP = 60


@dataclass
class FitConfig:
    trials: int = 60  # Optuna trials per head (on big data the time budget ends the search first)
    # wall-clock seconds for the whole fit: 20% gender search, 20% gender CV + refit,
    # 30% age search, 30% age CV + refit (CV folds are dropped, down to none, to keep it)
    timeout: float = 840.0
    folds: int = 5
    seed: int = 0
    threads: int = 0  # LightGBM threads, 0 = all cores
    mode: str = "auto"  # residual | direct | auto (residual when the features allow)
    age_weights: dict[str, float] = field(default_factory=dict)  # source -> sample weight
    max_bin: int = 63
    split: bool = False
    split_seed: int = DEFAULT_SEED
    val_fraction: float = DEFAULT_VAL_FRACTION
    features_key: str = "features"
    params_from: str = ""  # heads folder (or heads.json file) whose hyperparameters to reuse instead of searching
    # with params_from: also its round counts, without CV (refits those heads on these rows)
    reuse_rounds: bool = False


# ---------------------------------------------------------------------------- data


@dataclass
class Dataset:
    files: np.ndarray
    X: np.ndarray
    labels: Labels
    spec: dict

    @property
    def feature_names(self) -> list[str]:
        dim = self.X.shape[1]
        if self.spec.get("head_features"):
            return [f"emb{i}" for i in range(dim - 2)] + ["gender_logit", "age_mean"]
        return [f"emb{i}" for i in range(dim)]


def load_dataset(features: Path, labels_path: Path, key: str = "features") -> Dataset:
    """The feature rows that labels.csv labels (a labels file may name a subset of the
    files, e.g. one split; rows it does not name are left out and counted in spec)."""
    files, X, spec = load_features(features, key)
    if key == "features_noflip":
        spec = {**spec, "flip": False, "features": spec.get("features", "").replace(" (flip mean)", "")}
    labels = load_labels(labels_path)
    labelled = np.isin(files, labels.file)
    if not labelled.any():
        raise SystemExit(f"no file of {features} is labelled in {labels_path}")
    if not labelled.all():
        spec = {**spec, "unlabelled_rows_left_out": int((~labelled).sum())}
        files, X = files[labelled], X[labelled]
    return Dataset(files, X, labels.align(files), spec)


def column(ds: Dataset, name: str) -> int | None:
    names = ds.feature_names
    return names.index(name) if name in names else None


def fold_ids(labels: Labels, k: int, seed: int) -> np.ndarray:
    """Stratified k folds (source x gender x age decade), fixed by seed and file names.
    Rows of one file (a face and its augmented copies) share a fold, so no face is
    scored by a booster that saw it."""
    keys = strata(labels)
    folds = np.zeros(len(labels), np.int64)
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        files = sorted({str(labels.file[i]) for i in rows}, key=lambda f: rank_key(seed + 1000, f))
        offset = int(rank_key(seed, key)[:8], 16) % k  # spreads small strata over folds
        fold_of = {f: (r + offset) % k for r, f in enumerate(files)}
        for i in rows:
            folds[i] = fold_of[str(labels.file[i])]
    return folds


# ------------------------------------------------------------------------- boosting


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


@dataclass
class Task:
    name: str  # "gender" | "age"
    X: np.ndarray
    y: np.ndarray
    init_score: np.ndarray | None  # LightGBM init_score (residual mode): the pretrained prediction
    weight: np.ndarray | None
    source: np.ndarray
    folds: np.ndarray  # fold of each row for --folds; fold 0 is the search's hold-out
    max_bin: int = 63
    labels: Labels | None = None  # the rows' labels, to re-fold for another k
    fold_seed: int = 0  # seed of those folds
    _full: Any = None

    def fold_ids(self, k: int) -> np.ndarray:
        if k == int(self.folds.max()) + 1 or self.labels is None:
            return self.folds
        return fold_ids(self.labels, k, self.fold_seed)

    def init_score_of(self, rows: np.ndarray) -> np.ndarray | None:
        return None if self.init_score is None else self.init_score[rows]

    def full(self):
        """All rows binned once; folds and trials use subsets of it (shared bin edges)."""
        import lightgbm as lgb

        if self._full is None:
            self._full = lgb.Dataset(
                self.X, self.y, weight=self.weight, init_score=self.init_score, free_raw_data=False,
                params={"max_bin": self.max_bin, "feature_pre_filter": False, "verbosity": -1},
            ).construct()
        return self._full

    def base_params(self, cfg: FitConfig) -> dict[str, Any]:
        params = {
            "verbosity": -1,
            "num_threads": cfg.threads or os.cpu_count() or 1,
            "feature_pre_filter": False,
            "seed": cfg.seed,
            "deterministic": True,
            "force_row_wise": True,
            "max_bin": cfg.max_bin,
            "bagging_freq": 1,
        }
        if self.name == "gender":
            params.update(objective="binary", metric="binary_logloss")
        else:
            params.update(metric="l1")
        return params


def suggest(trial, task: Task) -> dict[str, Any]:
    params = {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 300, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.03, 0.5, log=True),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 100.0, log=True),
        "min_gain_to_split": trial.suggest_float("min_gain_to_split", 1e-4, 1.0, log=True),
    }
    if task.name == "age":
        params["objective"] = trial.suggest_categorical("objective", ["huber", "regression_l1", "regression"])
        if params["objective"] == "huber":
            params["alpha"] = trial.suggest_float("loss_scale", 1.0, 15.0, log=True)
    return params


def clean_params(params: dict[str, Any]) -> dict[str, Any]:
    out = dict(params)
    scale = out.pop("loss_scale", None)
    if scale is not None:
        out["alpha" if out.get("objective") == "huber" else "fair_c"] = scale
    return out


def train_one(task: Task, params: dict[str, Any], train: np.ndarray, valid: np.ndarray | None, rounds: int, callbacks=()):
    import lightgbm as lgb

    full = task.full()
    dtrain = full if len(train) == len(task.y) else full.subset(np.sort(train))
    cbs = list(callbacks)
    valid_sets = []
    if valid is not None:
        valid_sets = [full.subset(np.sort(valid))]
        cbs.append(lgb.early_stopping(EARLY_STOP, verbose=False))
    return lgb.train(params, dtrain, num_boost_round=rounds, valid_sets=valid_sets, callbacks=cbs)


def predict_task(task_name: str, booster, X: np.ndarray, init: np.ndarray | None, num_iteration: int | None = None) -> np.ndarray:
    raw = booster.predict(X, raw_score=True, num_iteration=num_iteration)
    if init is not None:
        raw = raw + init
    if task_name == "gender":
        return sigmoid(raw)
    # a regressor extrapolates past the ages it saw (a Huber head predicted -1.07 years);
    # the exported graph clips the same way (export.lightgbm), so CV scores what ships
    return np.clip(raw, *AGE_RANGE)


def task_score(task: Task, rows: np.ndarray, pred: np.ndarray) -> float:
    """What the search minimises: gender log loss; age MAE averaged over sources
    (the targets are per source, so neither source may hide behind the other)."""
    if task.name == "gender":
        p = np.clip(pred, 1e-7, 1 - 1e-7)
        y = task.y[rows]
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    err = np.abs(pred - task.y[rows])
    src = task.source[rows]
    return float(np.mean([err[src == s].mean() for s in np.unique(src)]))


def search(task: Task, cfg: FitConfig, seconds: float, log) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optuna TPE search on one inner split (fold 0 held out); returns (params, summary).

    No trial starts after `seconds`, and a running trial other than the first is pruned
    when it passes them, so the search ends close to its budget.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    valid = np.flatnonzero(task.folds == 0)
    train = np.flatnonzero(task.folds != 0)
    base = task.base_params(cfg)
    started = time.perf_counter()
    deadline = started + seconds

    def objective(trial) -> float:
        params = {**base, **clean_params(suggest(trial, task))}
        callback = PruneCallback(trial, every=50, deadline=deadline if trial.number > 0 else None)
        t0 = time.perf_counter()
        booster = train_one(task, params, train, valid, MAX_ROUNDS, [callback])
        pred = predict_task(task.name, booster, task.X[valid], task.init_score_of(valid), booster.best_iteration)
        trial.set_user_attr("best_iteration", int(booster.best_iteration or booster.current_iteration()))
        trial.set_user_attr("seconds_per_round", (time.perf_counter() - t0) / max(booster.current_iteration(), 1))
        value = task_score(task, valid, pred)
        log(f"  {task.name} trial {trial.number}: {value:.4f} ({booster.best_iteration} rounds, {time.perf_counter() - started:.0f} s)")
        return value

    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=min(8, max(cfg.trials // 3, 1))),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2),
    )
    # a sensible first guess, so even a tiny budget ends with a reasonable model
    study.enqueue_trial({**FIRST_GUESS, **(FIRST_AGE_LOSS if task.name == "age" else {})})
    study.optimize(objective, n_trials=cfg.trials, timeout=max(seconds, 1e-3), catch=())
    return {**base, **clean_params(study.best_trial.params)}, search_summary(study, task, seconds, time.perf_counter() - started)


FIRST_GUESS = {"learning_rate": 0.08, "num_leaves": 15, "min_data_in_leaf": 40, "feature_fraction": 0.15, "bagging_fraction": 0.8,
               "lambda_l2": 1.0, "min_gain_to_split": 1e-3}
FIRST_AGE_LOSS = {"objective": "huber", "loss_scale": 5.0}


def search_summary(study, task: Task, budget: float, seconds: float) -> dict[str, Any]:
    """What heads.json records of a search: counts, the best trial and every trial's parameters."""
    import optuna

    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial
    return {
        "trials": len(study.trials),
        "completed": len(completed),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "best_value": round(best.value, 5),
        "best_trial": best.number,
        "best_iteration": best.user_attrs["best_iteration"],
        "seconds_per_round": best.user_attrs["seconds_per_round"],
        "seconds": round(seconds, 1),
        "budget_seconds": round(budget, 1),
        "objective": "log loss" if task.name == "gender" else "MAE averaged over sources",
        "history": [
            {"trial": t.number, "value": None if t.value is None else round(t.value, 5), "state": t.state.name,
             "rounds": t.user_attrs.get("best_iteration"), **{k: (round(v, 5) if isinstance(v, float) else v) for k, v in t.params.items()}}
            for t in study.trials
        ],
    }


class PruneCallback:
    """Reports the inner-validation score to Optuna every `every` rounds; prunes bad trials."""

    def __init__(self, trial, every: int, deadline: float | None = None) -> None:
        self.trial, self.every, self.deadline = trial, every, deadline

    def __call__(self, env) -> None:
        import optuna

        if (env.iteration + 1) % self.every:
            return
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise optuna.TrialPruned()
        score = dict((name, value) for _, name, value, _ in env.evaluation_result_list)
        value = score.get("binary_logloss", score.get("l1"))
        if value is None:
            return
        self.trial.report(float(value), env.iteration)
        if self.trial.should_prune():
            raise optuna.TrialPruned()


def recorded_params(info: dict[str, Any], task: Task, cfg: FitConfig) -> dict[str, Any]:
    """A fitted booster's hyperparameters (its heads.json entry `info`), with this config's
    threads and seed."""
    return {**info["params"], **{k: v for k, v in task.base_params(cfg).items() if k in ("num_threads", "seed")}}


def no_heads(path: Path) -> str:
    return f"no fitted heads in {path} (no {HEADS_JSON}; write them with `python -m training.heads fit`)"


def missing_fit(heads_dir: Path, features: Path) -> str:
    """Why heads_dir and features cannot be read as fitted heads and their features; "" when they can."""
    if not (heads_dir / HEADS_JSON).is_file():
        return no_heads(heads_dir)
    if not features.is_file():
        return f"no such features file: {features}"
    return ""


def heads_record(path: Path) -> Path:
    """The heads.json of a heads folder, or `path` itself when it names such a file: a fit
    kept in docs/ under another name can lend its hyperparameters."""
    return path if path.is_file() else path / HEADS_JSON


def missing_params(path: Path) -> str:
    """Why `path` (a heads folder or heads.json) cannot lend its hyperparameters; "" when it can."""
    record = heads_record(path)
    if not record.is_file():
        return no_heads(path)
    try:
        info = json.loads(record.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{record} is not a heads record ({e})"
    for task in ("gender", "age"):
        entry = info.get(task) if isinstance(info, dict) else None
        if not isinstance(entry, dict) or not all(k in entry for k in ("params", "search", "num_boost_round")):
            return f"{record} is not a heads record (no {task} hyperparameters and rounds)"
    return ""


def reuse_params(heads_dir: Path, task: Task, cfg: FitConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Another fit's hyperparameters for this task (threads and seed from this config)."""
    info = json.loads(heads_record(heads_dir).read_text())[task.name]
    params = recorded_params(info, task, cfg)
    search = info["search"]
    summary = {
        "skipped": True,
        "params_from": str(heads_dir),
        "num_boost_round": int(info["num_boost_round"]),
        "best_iteration": search.get("best_iteration", info["num_boost_round"]),
        "seconds_per_round": search.get("seconds_per_round", 0.05),
    }
    return params, summary


def plan_cv(search_summary: dict[str, Any], folds: int, seconds: float) -> tuple[int, int]:
    """How many CV folds fit in `seconds`, from the best trial's speed; and the round count
    for the final fit should there be no CV. A fold trains to early stopping (best
    iteration + patience), the final fit on all rows about 1.25x a fold's rows."""
    per_round = search_summary["seconds_per_round"]
    best = search_summary["best_iteration"]
    rounds = max(1, int(round(best * 1.12)))
    final = rounds * per_round * 1.25
    fold = (best + EARLY_STOP) * per_round
    affordable = int((seconds - final) // max(fold, 1e-9))
    return max(0, min(folds, affordable)), rounds


def cross_validate(task: Task, params: dict[str, Any], k: int, log) -> tuple[dict[str, Any], np.ndarray, list[int]]:
    """Out-of-fold predictions and scores with early stopping in each fold."""
    oof = np.full(len(task.y), np.nan)
    iterations = []
    folds = task.fold_ids(k)
    if int(folds.max()) + 1 != k:
        raise ValueError(f"asked for {k} folds, the rows have {int(folds.max()) + 1}")
    for fold in range(k):
        valid = np.flatnonzero(folds == fold)
        train = np.flatnonzero(folds != fold)
        booster = train_one(task, params, train, valid, MAX_ROUNDS)
        iterations.append(int(booster.best_iteration or booster.current_iteration()))
        oof[valid] = predict_task(task.name, booster, task.X[valid], task.init_score_of(valid), booster.best_iteration)
        log(f"  {task.name} CV fold {fold}: {task_score(task, valid, oof[valid]):.4f} ({iterations[-1]} rounds)")
    if np.isnan(oof).any():
        raise RuntimeError(f"{int(np.isnan(oof).sum())} rows got no out-of-fold prediction")
    scores: dict[str, Any] = {"folds": k, "best_iterations": iterations}
    for name in ["all", *sorted(str(s) for s in np.unique(task.source))]:
        rows = np.ones(len(task.y), bool) if name == "all" else task.source == name
        if task.name == "gender":
            g = gender_metrics(task.y[rows], oof[rows])
            scores[name] = {"accuracy": round(g["accuracy"], 4), "roc_auc": round(g["roc_auc"], 4), "n": g["n"]}
        else:
            a = age_metrics(task.y[rows], oof[rows])
            scores[name] = {"mae": round(a["mae"], 3), "rmse": round(a["rmse"], 3), "n": a["n"]}
    return scores, oof, iterations


# ------------------------------------------------------------------------------ fit


def make_tasks(ds: Dataset, cfg: FitConfig, rows: np.ndarray) -> tuple[Task, Task, str]:
    gl, am = column(ds, "gender_logit"), column(ds, "age_mean")
    mode = cfg.mode
    if mode == "auto":
        mode = "residual" if gl is not None and am is not None else "direct"
    if mode == "residual" and (gl is None or am is None):
        raise SystemExit("--mode residual needs features with the pretrained heads' outputs (gender_logit, age_mean)")
    labels = ds.labels.subset(rows)
    X = ds.X[rows]
    folds = fold_ids(labels, cfg.folds, cfg.seed)
    gender = Task(
        "gender", X, labels.male.astype(np.float64),
        X[:, gl].astype(np.float64) if mode == "residual" else None, None, labels.source, folds, cfg.max_bin,
        labels=labels, fold_seed=cfg.seed,
    )
    known = ~np.isnan(labels.age)
    weight = None
    if cfg.age_weights:
        unknown_sources = set(cfg.age_weights) - set(np.unique(labels.source).tolist())
        if unknown_sources:
            raise SystemExit(f"--age-weight names sources not in the data: {sorted(unknown_sources)}")
        weight = np.array([cfg.age_weights.get(s, 1.0) for s in labels.source[known]])
    age = Task(
        "age", X[known], labels.age[known],
        X[known][:, am].astype(np.float64) if mode == "residual" else None, weight, labels.source[known], folds[known],
        cfg.max_bin, labels=labels.subset(np.flatnonzero(known)), fold_seed=cfg.seed,
    )
    return gender, age, mode


def fit_rows(ds: Dataset, cfg: FitConfig, labels_path: Path) -> np.ndarray:
    """The rows to fit: all, or with --split the train split only."""
    if not cfg.split:
        return np.arange(len(ds.files))
    val = split_for_files(ds.files, load_labels(labels_path), cfg.split_seed, cfg.val_fraction)
    return np.flatnonzero(~val)


def fit_header(ds: Dataset, cfg: FitConfig, features: Path, rows: np.ndarray, mode: str, command: str) -> dict[str, Any]:
    """heads.json's description of the fit, before the boosters are added."""
    import lightgbm as lgb

    return {
        "format": "agegender-lightgbm-heads/1",
        "mode": mode,
        "feature_dim": int(ds.X.shape[1]),
        "feature_spec": ds.spec,
        "features_file": str(features),
        "features_key": cfg.features_key,
        "init_columns": {"gender": column(ds, "gender_logit"), "age": column(ds, "age_mean")} if mode == "residual" else {},
        "fit_rows": int(len(rows)),
        "fit_rows_by_source": {s: int((ds.labels.source[rows] == s).sum()) for s in np.unique(ds.labels.source[rows])},
        "split": {"used": cfg.split, "seed": cfg.split_seed, "val_fraction": cfg.val_fraction} if cfg.split else {"used": False},
        "config": asdict(cfg),
        "command": command,
        "git_commit": git_commit(),
        "lightgbm_version": lgb.__version__,
    }


# the time budget, as fractions of --timeout: search then CV + refit, gender then age
PHASE_SHARES = {("gender", "search"): 0.2, ("gender", "cv"): 0.2, ("age", "search"): 0.3, ("age", "cv"): 0.3}


def phase_deadlines(start: float, timeout: float) -> dict[tuple[str, str], float]:
    """When each phase must end; a phase that ends early leaves its time to the next."""
    ends, total = {}, 0.0
    for key, share in PHASE_SHARES.items():
        total += share
        ends[key] = start + total * timeout
    return ends


def choose_params(task: Task, cfg: FitConfig, deadline: float, log) -> tuple[dict[str, Any], dict[str, Any]]:
    """Hyperparameters by search within the deadline, or reused from --params-from."""
    if cfg.params_from:
        log(f"{task.name}: hyperparameters from {cfg.params_from}, no search")
        return reuse_params(Path(cfg.params_from), task, cfg)
    budget = deadline - time.perf_counter()
    log(f"{task.name}: searching ({budget:.0f} s budget, {cfg.trials} trials at most)")
    return search(task, cfg, budget, log)


def validate_params(task: Task, params: dict[str, Any], search_summary: dict[str, Any], cfg: FitConfig, deadline: float, log) -> tuple[dict[str, Any], int]:
    """CV scores of the parameters with as many folds as fit before the deadline, and the
    round count for the final booster."""
    folds, rounds_hint = plan_cv(search_summary, cfg.folds, deadline - time.perf_counter())
    if folds >= 2:
        log(f"{task.name}: {folds}-fold CV with the best parameters")
        cv, _, iterations = cross_validate(task, params, folds, log)
        rounds = max(1, int(round(np.mean(iterations) * (1.0 + 1.0 / max(folds - 1, 1)) ** 0.5)))
    else:
        log(f"{task.name}: no time left for CV; the search's held-out fold scores the parameters")
        cv = {"folds": 0, "note": "no time for CV within --timeout; see search.best_value"}
        rounds = rounds_hint
    if folds != cfg.folds:
        cv["folds_requested"] = cfg.folds
    return cv, rounds


def fit_task(task: Task, cfg: FitConfig, ends: dict[tuple[str, str], float], model_file: Path, log) -> dict[str, Any]:
    """Search, cross-validate and refit one booster; saved to `model_file`; its heads.json entry."""
    started = time.perf_counter()
    params, search_summary = choose_params(task, cfg, ends[(task.name, "search")], log)
    if cfg.params_from and cfg.reuse_rounds:
        rounds = search_summary["num_boost_round"]
        cv: dict[str, Any] = {"folds": 0, "note": f"hyperparameters and {rounds} rounds from {cfg.params_from}; no CV"}
    else:
        cv, rounds = validate_params(task, params, search_summary, cfg, ends[(task.name, "cv")], log)
    booster = train_one(task, params, np.arange(len(task.y)), None, rounds)
    booster.save_model(str(model_file))
    log(f"{task.name}: CV {json.dumps({k: v for k, v in cv.items() if k not in ('folds', 'best_iterations')})}, {rounds} rounds")
    return {
        "model_file": model_file.name,
        "params": params,
        "num_boost_round": rounds,
        "search": search_summary,
        "cv": cv,
        "fit_rows": int(len(task.y)),
        "seconds": round(time.perf_counter() - started, 1),
    }


def fit(features: Path, labels_path: Path, out: Path, cfg: FitConfig, command: str = "", log=print) -> dict[str, Any]:
    """Fit both heads on the feature rows labels_path labels; writes them and heads.json to `out`."""
    started = time.perf_counter()
    ds = load_dataset(features, labels_path, cfg.features_key)
    rows = fit_rows(ds, cfg, labels_path)
    gender, age, mode = make_tasks(ds, cfg, rows)
    log(f"fitting on {len(rows)} faces ({'train split' if cfg.split else 'all rows'}), {ds.X.shape[1]} features, "
        f"{len(age.y)} with known age, mode {mode}")
    result = fit_header(ds, cfg, features, rows, mode, command)
    out.mkdir(parents=True, exist_ok=True)
    ends = phase_deadlines(started, cfg.timeout)
    for task, filename in ((gender, GENDER_MODEL), (age, AGE_MODEL)):
        result[task.name] = fit_task(task, cfg, ends, out / filename, log)
    result["seconds"] = round(time.perf_counter() - started, 1)
    (out / HEADS_JSON).write_text(json.dumps(result, indent=2, default=float))
    return result


# ---------------------------------------------------------------------------- heads


@dataclass(frozen=True)
class FeatureSpec:
    """How the feature rows the heads were fitted on were made (`training.bottlenecks`)."""

    head_features: bool  # the pretrained heads' outputs follow the embedding
    flip: bool  # each row is the mean of the crop's and its mirror's
    description: str  # in words, for the model's provenance
    backbone: str  # the backbone file the features came from
    backbone_sha256: str  # "" when not recorded

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "FeatureSpec":
        return cls(
            head_features=bool(spec.get("head_features")),
            flip=bool(spec.get("flip")),
            description=str(spec.get("features", "embedding")),
            backbone=str(spec.get("backbone", "")),
            backbone_sha256=str(spec.get("backbone_sha256", "")),
        )


@dataclass(frozen=True)
class SplitRecord:
    """The train/validation split a fit used (`training.splits`)."""

    used: bool
    seed: int = DEFAULT_SEED
    val_fraction: float = DEFAULT_VAL_FRACTION


@dataclass(frozen=True)
class HeadsRecord:
    """What heads.json says about a fit, typed: what scoring and export read."""

    mode: str  # "residual" | "direct"
    feature_dim: int
    feature_spec: FeatureSpec
    features_file: str  # the npz the heads were fitted on, "" when not recorded
    features_key: str
    init_columns: dict[str, int]  # task -> feature column of its init score (residual mode)
    split: SplitRecord
    folds: int  # CV folds asked for
    params_from: str  # the fit whose hyperparameters were reused, "" after a search
    reuse_rounds: bool  # with params_from: its round counts too, no CV
    command: str
    git_commit: str
    lightgbm_version: str
    fit_rows_by_source: dict[str, int]
    cv: dict[str, dict[str, Any]]  # task -> CV scores (without the per-fold iterations)

    @classmethod
    def from_json(cls, info: dict[str, Any]) -> "HeadsRecord":
        split = info.get("split", {})
        return cls(
            mode=info["mode"],
            feature_dim=int(info["feature_dim"]),
            feature_spec=FeatureSpec.from_dict(info.get("feature_spec", {})),
            features_file=str(info.get("features_file", "")),
            features_key=info.get("features_key", "features"),
            init_columns={k: int(v) for k, v in (info.get("init_columns") or {}).items() if v is not None},
            split=SplitRecord(True, split["seed"], split["val_fraction"]) if split.get("used") else SplitRecord(False),
            folds=int(info.get("config", {}).get("folds", FitConfig.folds)),
            params_from=str(info.get("config", {}).get("params_from", "")),
            reuse_rounds=bool(info.get("config", {}).get("reuse_rounds", False)),
            command=str(info.get("command", "")),
            git_commit=str(info.get("git_commit", "")),
            lightgbm_version=str(info.get("lightgbm_version", "")),
            fit_rows_by_source=dict(info.get("fit_rows_by_source", {})),
            cv={t: {k: v for k, v in info.get(t, {}).get("cv", {}).items() if k != "best_iterations"} for t in ("gender", "age")},
        )

    def tuning(self) -> str:
        """How the hyperparameters and round counts were chosen, in words."""
        if not self.params_from:
            return f"Optuna search + {self.folds}-fold CV"
        if self.reuse_rounds:
            return f"hyperparameters and round counts of {self.params_from} (no search, no CV)"
        return f"hyperparameters of {self.params_from} (no search) + {self.folds}-fold CV"


@dataclass
class Heads:
    info: dict[str, Any]  # heads.json as written
    gender: Any  # lightgbm.Booster
    age: Any
    record: HeadsRecord = field(init=False)

    def __post_init__(self) -> None:
        self.record = HeadsRecord.from_json(self.info)

    @classmethod
    def load(cls, directory: str | Path) -> "Heads":
        import lightgbm as lgb

        directory = Path(directory)
        info = json.loads((directory / HEADS_JSON).read_text())
        gender = lgb.Booster(model_file=str(directory / info["gender"]["model_file"]))
        age = lgb.Booster(model_file=str(directory / info["age"]["model_file"]))
        return cls(info, gender, age)

    def refit_config(self, folds: int, threads: int = 0, seed: int = 0) -> FitConfig:
        """A config that makes boosters as these heads' were made (binning, residual or direct)."""
        return FitConfig(folds=folds, seed=seed, threads=threads, max_bin=int(self.info["config"]["max_bin"]), mode=self.record.mode)

    def refit(self, task: Task, cfg: FitConfig, rows: np.ndarray):
        """`task`'s booster fitted again on `rows` with these heads' hyperparameters and round count."""
        info = self.info[task.name]
        return train_one(task, recorded_params(info, task, cfg), rows, None, int(info["num_boost_round"]))

    def init_score(self, task: str, X: np.ndarray) -> np.ndarray | None:
        """The pretrained prediction the booster of `task` corrects (residual mode), else None."""
        col = self.record.init_columns.get(task)
        return None if col is None else X[:, col].astype(np.float64)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p_male, age in years) for feature rows laid out as at fit time."""
        X = np.asarray(X, np.float32)
        if X.shape[1] != self.record.feature_dim:
            raise ValueError(f"features have {X.shape[1]} columns, the heads expect {self.record.feature_dim}")
        p_male = predict_task("gender", self.gender, X, self.init_score("gender", X))
        age = predict_task("age", self.age, X, self.init_score("age", X))
        return p_male, age


def group_table(labels: Labels, p_male: np.ndarray, age: np.ndarray) -> dict[str, dict[str, dict[str, Any]]]:
    """{source: {row: metrics}}: each source (and all) overall, by gender, age decade and
    race, with gender accuracy / AUC and age MAE / RMSE / bias per row."""

    def row(mask: np.ndarray) -> dict[str, Any]:
        g = gender_metrics(labels.male[mask], p_male[mask])
        a = age_metrics(labels.age[mask], age[mask])
        return {
            "n": int(mask.sum()),
            "gender_accuracy": None if g["accuracy"] is None else round(g["accuracy"], 4),
            "gender_roc_auc": None if g["roc_auc"] is None else round(g["roc_auc"], 4),
            "n_age": a["n"],
            "age_mae": None if a["mae"] is None else round(a["mae"], 3),
            "age_rmse": None if a["rmse"] is None else round(a["rmse"], 3),
            "age_bias": None if a["bias"] is None else round(a["bias"], 3),
        }

    known = ~np.isnan(labels.age)
    decade = np.array([decade_label(d) if k else "unknown" for d, k in zip(age_decades(np.where(known, labels.age, 0)), known)])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for source in ["all", *sorted(np.unique(labels.source))]:
        in_source = np.ones(len(labels), bool) if source == "all" else labels.source == source
        rows = {"all": row(in_source)}
        for name, mask in (("male", labels.male), ("female", ~labels.male)):
            rows[f"gender {name}"] = row(in_source & mask)
        order = sorted(set(decade[in_source].tolist()), key=lambda d: (d == "unknown", int(d.split("-")[0].rstrip("+")) if d != "unknown" else 0))
        for d in order:
            rows[f"age {d}"] = row(in_source & (decade == d))
        for race in sorted(set(labels.race[in_source].tolist()) - {""}):
            rows[f"race {race}"] = row(in_source & (labels.race == race))
        out[str(source)] = rows
    return out


def print_group_table(table: dict[str, dict[str, dict[str, Any]]], title: str, stderr: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=stderr, width=110)

    def show(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for source, rows in table.items():
        t = Table(title=f"{title}: {source}")
        for col in ("group", "faces", "gender acc", "AUC", "aged", "age MAE", "RMSE", "bias"):
            t.add_column(col, justify="left" if col == "group" else "right")
        for name, r in rows.items():
            t.add_row(name, str(r["n"]), show(r["gender_accuracy"], ".2%"), show(r["gender_roc_auc"], ".4f"), str(r["n_age"]),
                      show(r["age_mae"], ".2f"), show(r["age_rmse"], ".2f"), show(r["age_bias"], "+.2f"))
        console.print(t)


def score(heads_dir: Path, features: Path, labels_path: Path, subset: str = "auto", table: bool = False) -> dict[str, Any]:
    heads = Heads.load(heads_dir)
    record = heads.record
    ds = load_dataset(features, labels_path, record.features_key)
    if subset == "auto":
        subset = "val" if record.split.used else "all"
    rows = np.arange(len(ds.files))
    if subset in ("val", "train"):
        val = split_for_files(ds.files, load_labels(labels_path), record.split.seed, record.split.val_fraction)
        rows = np.flatnonzero(val if subset == "val" else ~val)
    lab = ds.labels.subset(rows)
    p_male, age = heads.predict(ds.X[rows])
    groups = group_table(lab, p_male, age)
    if table:
        print_group_table(groups, f"{heads_dir} on {subset}")
    metrics = {source: rows_["all"] for source, rows_ in groups.items()}
    return {"heads": str(heads_dir), "features": str(features), "subset": subset, "metrics": metrics, "detail": groups}


# ------------------------------------------------------------------------------ CLI


def parse_weights(text: str) -> dict[str, float]:
    out = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if not value:
            raise argparse.ArgumentTypeError(f"expected source=weight, got {part!r}")
        out[name.strip()] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.heads", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="search, cross-validate and fit the gender and age boosters")
    f.add_argument("--features", type=Path, required=True)
    f.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--split", action="store_true", help="fit on the train split only (training.splits)")
    f.add_argument("--split-seed", type=int, default=DEFAULT_SEED)
    f.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION)
    f.add_argument("--trials", type=int, default=FitConfig.trials, help="Optuna trials per head (default %(default)s)")
    f.add_argument("--timeout", type=float, default=FitConfig.timeout, help="wall-clock budget in seconds for the whole fit: searches, CV and refits (default %(default)s)")
    f.add_argument("--folds", type=int, default=FitConfig.folds)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=0)
    f.add_argument("--mode", choices=["auto", "residual", "direct"], default="auto")
    f.add_argument("--age-weight", type=parse_weights, default={}, help="per-source age sample weights, e.g. wiki=0.5")
    f.add_argument("--features-key", default="features", help="array of the npz to use (features or features_noflip)")
    f.add_argument("--params-from", default="", help="reuse the hyperparameters of this heads folder or heads.json file (no search)")
    f.add_argument("--reuse-rounds", action="store_true", help="with --params-from: also its round counts, no CV (the same heads refitted)")
    f.add_argument("--quiet", action="store_true")
    s = sub.add_parser("score", help="print JSON metrics of fitted heads")
    s.add_argument("--heads", type=Path, required=True)
    s.add_argument("--features", type=Path, required=True)
    s.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    s.add_argument("--subset", choices=["auto", "all", "train", "val"], default="auto",
                   help="rows to score; auto = the validation split if the heads were fitted with --split, else all")
    s.add_argument("--table", action="store_true", help="also print tables by source, gender, decade, race")
    s.add_argument("--detail", action="store_true", help="include the per-group breakdown in the JSON")
    args = parser.parse_args(argv)
    if args.command == "score":
        problem = missing_fit(args.heads, args.features)
    else:
        problem = missing_params(Path(args.params_from)) if args.params_from else ""
        if not problem and not args.features.is_file():
            problem = f"no such features file: {args.features}"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    if args.command == "fit":
        cfg = FitConfig(
            trials=args.trials, timeout=args.timeout, folds=args.folds, seed=args.seed, threads=args.threads,
            mode=args.mode, age_weights=args.age_weight, split=args.split, split_seed=args.split_seed,
            val_fraction=args.val_fraction, features_key=args.features_key, params_from=args.params_from,
            reuse_rounds=args.reuse_rounds,
        )
        if args.reuse_rounds and not args.params_from:
            parser.error("--reuse-rounds needs --params-from")
        command = "python -m training.heads " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        log = (lambda *a, **k: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
        result = fit(args.features, args.labels, args.out, cfg, command, log)
        print(json.dumps({
            "out": str(args.out), "mode": result["mode"], "seconds": result["seconds"],
            "gender_cv": result["gender"]["cv"], "age_cv": result["age"]["cv"],
        }, indent=2))
    else:
        result = score(args.heads, args.features, args.labels, args.subset, args.table)
        if not args.detail:
            result.pop("detail")
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
