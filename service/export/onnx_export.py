"""A bundle as ONNX: LightGBM's trees rebuilt from its own model dump in float64, then the bundle's scorer as
ONNX operators.

The graph (input ``features``: float64, shape (n, F), the bundle's feature order, categories as their index in
export.json's list, NaN = missing):

    features -> TreeEnsemble (ai.onnx.ml opset 5; float64 thresholds, leaves and sum) -> margin
    margin -> slope * margin + intercept = logit -> Sigmoid -> pd
    logit -> Round(offset - factor * logit) -> Clip(min, max) -> score
    pd -> number of grade bounds <= pd -> Gather(grade names) -> grade

The trees are written node by node from ``Booster.dump_model()``, LightGBM's own description of them: each
threshold as the double LightGBM compares with, NaN routed as LightGBM routes it (``missing_type`` and
``default_left``; with no missing type NaN is read as 0), a categorical split as a set membership test. Why not
onnxmltools: its TreeEnsembleClassifier compares in float32, so a value within float32 rounding of a threshold
took the other branch (a table model split at 0.25000000000000017; 0.2500000000000002 went left in ONNX, right
in LightGBM). The scorer runs in float64 with the engine's formulas (service/scoring/score.py).

Every export is run in ONNX Runtime before it is written, on the bundle's canary rows (stored at training time,
one of them all-missing) and on rows built to reach every split with its feature exactly at the threshold,
1 ulp either side of it and missing (every category of a categorical split); it is refused unless margin and
PD agree with LightGBM's within ``MARGIN_TOLERANCE`` and ``PD_TOLERANCE``. export.json records the differences
measured. TreeSHAP contributions are not in the graph: use the MLflow export or ``service.notebook`` for them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from service.export import ExportError
from service.scoring.bundle import MANIFEST_FILE, Bundle, Canary, canonical_json, sha256_file
from service.scoring.score import Scorer

MODEL_FILE = "model.onnx"
SIDECAR_FILE = "export.json"
INPUT = "features"
OUTPUTS = ("margin", "pd", "score", "grade")
# ai.onnx.ml 5 (with ONNX opset 21, both from ONNX 1.16) brings TreeEnsemble: float64 input, thresholds, leaves and
# output. ONNX Runtime runs it from 1.20.
OPSET, ML_OPSET = 21, 5
# The same thresholds and leaves as LightGBM leave only the order of additions: the margin measures equal to
# LightGBM's, the PD within 4e-16 of the engine's (docs/notebooks.md); a branch taken the other way moves the
# margin by a leaf difference, far above these.
MARGIN_TOLERANCE = 1e-12
PD_TOLERANCE = 1e-12
BRANCH_LEQ, BRANCH_MEMBER = 0, 6  # TreeEnsemble's nodes_modes: x <= split; x in the node's membership_values
DUMP_INFINITY = 1e300  # dump_model() writes thresholds beyond it as +-1e300
SUM, NO_TRANSFORM = 1, 0  # TreeEnsemble's aggregate_function and post_transform


@dataclass(frozen=True)
class OnnxExport:
    """export.json: everything a consumer of model.onnx needs besides the graph. Its one reader and writer."""

    format: str
    model_file: str
    model_sha256: str
    bundle_version: str
    bundle_kind: str
    bundle_manifest_sha256: str
    bundle_files: dict[str, str]  # the bundle's manifest: SHA-256 of each file
    input: dict  # name, dtype, shape, missing, features [{name, internal, categories, ...}]
    outputs: dict[str, str]  # output name -> what it holds
    scorer: dict  # calibration, scaling, grades, as in the bundle's metadata.json
    precision: dict  # what was checked at export: rows, largest differences, tolerances
    libraries: dict[str, str]

    def to_json(self) -> bytes:
        return canonical_json(asdict(self))

    @classmethod
    def read(cls, folder: Path) -> OnnxExport:
        return cls(**json.loads((folder / SIDECAR_FILE).read_text(encoding="utf-8")))


def to_onnx(bundle: Bundle) -> onnx.ModelProto:
    """The bundle's trees and scorer as one ONNX model (see the module docstring)."""
    n_features = len(bundle.feature_names)
    scorer: Scorer = bundle.scorer
    edges = np.array([g.max_pd for g in scorer.grades.bands[:-1]], dtype=np.float64)
    scaling = scorer.scaling
    init = [
        numpy_helper.from_array(np.array(scorer.calibration.slope, dtype=np.float64), "slope"),
        numpy_helper.from_array(np.array(scorer.calibration.intercept, dtype=np.float64), "intercept"),
        numpy_helper.from_array(np.array(scaling.offset, dtype=np.float64), "offset"),
        numpy_helper.from_array(np.array(scaling.factor, dtype=np.float64), "factor"),
        numpy_helper.from_array(np.array(scaling.min_score, dtype=np.float64), "min_score"),
        numpy_helper.from_array(np.array(scaling.max_score, dtype=np.float64), "max_score"),
        numpy_helper.from_array(edges.reshape(1, -1), "grade_bounds"),
        numpy_helper.from_array(np.array(scorer.grades.names, dtype=object), "grade_names"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        Forest.from_dump(lightgbm_dump(bundle)).node(INPUT, "margin_2d"),
        helper.make_node("Reshape", ["margin_2d", "flat"], ["margin"]),
        # the engine's arithmetic, in its order: Calibration.logit, then Scaling.score_from_logit
        helper.make_node("Mul", ["margin", "slope"], ["slope_margin"]),
        helper.make_node("Add", ["slope_margin", "intercept"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["pd"]),
        helper.make_node("Mul", ["logit", "factor"], ["factor_logit"]),
        helper.make_node("Sub", ["offset", "factor_logit"], ["raw_score"]),
        helper.make_node("Round", ["raw_score"], ["rounded_score"]),  # half to even, as numpy.round
        helper.make_node("Clip", ["rounded_score", "min_score", "max_score"], ["score"]),
        # Grades.of: searchsorted(bounds, pd, side="right") = the number of bounds <= pd
        helper.make_node("Unsqueeze", ["pd", "axis1"], ["pd_column"]),
        helper.make_node("GreaterOrEqual", ["pd_column", "grade_bounds"], ["above"]),
        helper.make_node("Cast", ["above"], ["above_int"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["above_int", "axis1"], ["grade_index"], keepdims=0),
        helper.make_node("Gather", ["grade_names", "grade_index"], ["grade"], axis=0),
    ]
    graph = helper.make_graph(
        nodes, f"smecredit_{bundle.version}",
        [helper.make_tensor_value_info(INPUT, TensorProto.DOUBLE, [None, n_features])],
        [helper.make_tensor_value_info("margin", TensorProto.DOUBLE, [None]),
         helper.make_tensor_value_info("pd", TensorProto.DOUBLE, [None]),
         helper.make_tensor_value_info("score", TensorProto.DOUBLE, [None]),
         helper.make_tensor_value_info("grade", TensorProto.STRING, [None])],
        init)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)]
    model = helper.make_model(graph, producer_name="smecredit", opset_imports=opsets)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    model.doc_string = (f"smecredit model {bundle.version}: margin, calibrated pd, score points and grade from "
                        f"features in float64 (order and categories in {SIDECAR_FILE})")
    helper.set_model_props(model, {"smecredit.bundle_version": bundle.version,
                                   "smecredit.features": json.dumps(list(bundle.feature_names), ensure_ascii=False)})
    onnx.checker.check_model(model, full_check=True)
    return model


def lightgbm_dump(bundle: Bundle) -> dict:
    """LightGBM's own description of the trees the bundle predicts with (the same iterations), refused unless
    it is a binary model whose raw score is the plain sum of its trees' leaves."""
    dump = bundle.booster.dump_model(num_iteration=bundle.booster.best_iteration)
    if (dump["num_class"], dump["num_tree_per_iteration"]) != (1, 1) or not dump["objective"].startswith("binary"):
        raise ExportError("--format", f"only a binary model can be exported to ONNX; this one's objective is "
                                      f"{dump['objective']!r} with {dump['num_class']} classes")
    if dump.get("average_output"):
        raise ExportError("--format", "a random forest model (average_output) cannot be exported to ONNX")
    # the dump writes an infinite threshold as +-1e300 (a split sending every number one way and NaN the other):
    # take every numeric threshold from the model text, which keeps each double exactly, inf included
    exact = _text_thresholds(bundle.booster.model_to_string(num_iteration=bundle.booster.best_iteration))
    if len(exact) != len(dump["tree_info"]):
        raise ExportError("--format", f"LightGBM's model text has {len(exact)} trees, its dump "
                                      f"{len(dump['tree_info'])}")
    for tree, thresholds in zip(dump["tree_info"], exact, strict=True):
        for node in _splits([tree]):
            if node["decision_type"] == "<=":
                t = thresholds[node["split_index"]]
                if abs(t) < DUMP_INFINITY and t != node["threshold"]:
                    raise ExportError("--format", f"LightGBM's dump and model text disagree on a threshold "
                                                  f"({node['threshold']!r}, {t!r})")
                node["threshold"] = t
    return dump


def _text_thresholds(model_text: str) -> list[list[float]]:
    """Each tree's ``threshold=`` line of LightGBM's model text, by split index."""
    trees: list[list[float]] = []
    for line in model_text.splitlines():
        if line.startswith("Tree="):
            trees.append([])
        elif line.startswith("threshold=") and trees:
            trees[-1] = [float(v) for v in line.removeprefix("threshold=").split()]
        elif line.startswith("end of trees"):
            break
    return trees


@dataclass
class Forest:
    """The attributes of one ai.onnx.ml TreeEnsemble node: interior nodes (``nodes_*``) and leaves (``leaf_*``)
    in two lists, each tree in pre-order, a child named by its index in one of them (``*leafs`` says which)."""

    featureids: list[int] = field(default_factory=list)
    splits: list[float] = field(default_factory=list)
    modes: list[int] = field(default_factory=list)
    truenodeids: list[int] = field(default_factory=list)  # LightGBM's left child
    trueleafs: list[int] = field(default_factory=list)
    falsenodeids: list[int] = field(default_factory=list)  # LightGBM's right child
    falseleafs: list[int] = field(default_factory=list)
    missing_tracks_true: list[int] = field(default_factory=list)  # NaN goes left
    membership: list[float] = field(default_factory=list)  # each BRANCH_MEMBER node's categories, then NaN
    leaf_weights: list[float] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)

    @classmethod
    def from_dump(cls, dump: dict) -> Forest:
        forest = cls()
        for tree in dump["tree_info"]:
            root = tree["tree_structure"]
            if "leaf_value" in root:  # a tree of one leaf: a split whose two branches end in that leaf
                root = {"split_feature": 0, "decision_type": "<=", "threshold": 0.0, "missing_type": "None",
                        "default_left": True, "left_child": root, "right_child": root}
            forest.roots.append(forest._add(root))
        return forest

    def _add(self, root: dict) -> int:
        """Append a dumped tree, interior nodes in pre-order; return the index of its root."""
        first = len(self.featureids)
        pending: list[tuple[dict, int, bool]] = [(root, -1, True)]  # (node, parent's index, its left child?)
        while pending:
            node, parent, left = pending.pop()
            if "leaf_value" in node:
                if "leaf_coeff" in node:
                    raise ExportError("--format", "a linear-tree model (leaves with coefficients) cannot be "
                                                  "exported to ONNX")
                index, is_leaf = len(self.leaf_weights), 1
                self.leaf_weights.append(float(node["leaf_value"]))
            else:
                index, is_leaf = len(self.featureids), 0
                self._append_split(node)
                # right pushed first: the left subtree is numbered first, as LightGBM prints it
                pending += [(node["right_child"], index, False), (node["left_child"], index, True)]
            if parent >= 0:
                ids, leafs = (self.truenodeids, self.trueleafs) if left else (self.falsenodeids, self.falseleafs)
                ids[parent], leafs[parent] = index, is_leaf
        return first

    def _append_split(self, node: dict) -> None:
        self.featureids.append(int(node["split_feature"]))
        if node["decision_type"] == "<=":
            if node["missing_type"] == "Zero":
                raise ExportError("--format", "a split treats zero as missing (zero_as_missing), which the ONNX "
                                              "trees do not reproduce; not exported")
            self.modes.append(BRANCH_LEQ)
            self.splits.append(float(node["threshold"]))
            self.missing_tracks_true.append(int(nan_goes_left(node)))
        elif node["decision_type"] == "==":
            self.modes.append(BRANCH_MEMBER)
            self.splits.append(0.0)  # unused: the categories are in membership
            self.missing_tracks_true.append(0)
            self.membership += [float(c) for c in categories_left(node)] + [math.nan]
        else:
            raise ExportError("--format", f"unknown LightGBM decision type {node['decision_type']!r}")
        self.truenodeids.append(-1)
        self.trueleafs.append(-1)
        self.falsenodeids.append(-1)
        self.falseleafs.append(-1)

    def node(self, source: str, target: str) -> onnx.NodeProto:
        """One TreeEnsemble: float64 in, float64 splits and leaves, the leaves summed, no post-transform."""
        def doubles(values: list[float]) -> onnx.TensorProto:
            return numpy_helper.from_array(np.array(values, dtype=np.float64))

        members = {"membership_values": doubles(self.membership)} if self.membership else {}
        return helper.make_node(
            "TreeEnsemble", [source], [target], domain="ai.onnx.ml", name="lightgbm_trees",
            n_targets=1, aggregate_function=SUM, post_transform=NO_TRANSFORM, tree_roots=self.roots,
            nodes_featureids=self.featureids, nodes_splits=doubles(self.splits),
            nodes_modes=numpy_helper.from_array(np.array(self.modes, dtype=np.uint8)),
            nodes_truenodeids=self.truenodeids, nodes_trueleafs=self.trueleafs,
            nodes_falsenodeids=self.falsenodeids, nodes_falseleafs=self.falseleafs,
            nodes_missing_value_tracks_true=self.missing_tracks_true,
            leaf_targetids=[0] * len(self.leaf_weights), leaf_weights=doubles(self.leaf_weights), **members)


def nan_goes_left(split: dict) -> bool:
    """LightGBM's NumericalDecision for NaN: the default direction if the split learned one (missing type NaN),
    otherwise NaN is read as 0.0 and compared with the threshold."""
    if split["missing_type"] == "NaN":
        return bool(split["default_left"])
    return 0.0 <= float(split["threshold"])


def categories_left(split: dict) -> list[int]:
    """A categorical split's categories that go left; LightGBM dumps them as "1||4||7". Anything else goes
    right: other codes, negative codes and NaN (LightGBM casts NaN to int, INT_MIN on x86-64, and sends it
    right; the export check tests NaN at every categorical split against this LightGBM)."""
    return [int(c) for c in str(split["threshold"]).split("||")]


def split_rows(dump: dict, n_features: int) -> np.ndarray:
    """Rows that reach each split of each tree with the split's feature exactly at the threshold, 1 ulp below
    and above it (``np.nextafter``) and missing; for a categorical split, every category the trees know, one
    more, -1 and missing. Float32 thresholds, a wrong NaN direction or a wrong category set show here. The
    features off a row's path are missing where the path allows (else at a bound of it), so a branch taken the
    wrong way goes unseen only if it ends, for that row, in a leaf of the same value."""
    codes: dict[int, set[int]] = {}  # categorical feature -> every category a split names, and one more
    for node in _splits(dump["tree_info"]):
        if node["decision_type"] == "==":
            named = categories_left(node)
            codes.setdefault(node["split_feature"], set()).update(named + [max(named) + 1])
    rows: list[np.ndarray] = []
    for tree in dump["tree_info"]:
        pending: list[tuple[dict, dict[int, _Reach]]] = [(tree["tree_structure"], {})]
        while pending:
            node, path = pending.pop()
            if "leaf_value" in node:
                continue
            feature = node["split_feature"]
            row = np.full(n_features, np.nan)
            for f, reach in path.items():
                if f != feature:
                    row[f] = reach.value()
            if node["decision_type"] == "==":
                values = sorted(codes[feature] | {0}) + [-1.0, np.nan]
            else:
                t = float(node["threshold"])
                values = [np.nextafter(t, -np.inf), t, np.nextafter(t, np.inf), np.nan]
            for v in values:
                rows.append(row.copy())
                rows[-1][feature] = v
            for side in ("left", "right"):
                reach = path.get(feature) or _Reach.anything(codes.get(feature))
                narrowed = reach.narrow(node, left=side == "left")
                if narrowed.possible():
                    pending.append((node[f"{side}_child"], path | {feature: narrowed}))
    return np.vstack(rows) if rows else np.empty((0, n_features))


def _splits(trees: list[dict]) -> Iterator[dict]:
    for tree in trees:
        pending = [tree["tree_structure"]]
        while pending:
            node = pending.pop()
            if "leaf_value" not in node:
                yield node
                pending += [node["left_child"], node["right_child"]]


@dataclass(frozen=True)
class _Reach:
    """The values of one feature that follow a path of splits: lo < x <= hi (numeric) or one of ``codes``
    (categorical), and whether NaN follows it too."""

    lo: float = -math.inf
    hi: float = math.inf
    nan: bool = True
    codes: frozenset[int] | None = None

    @classmethod
    def anything(cls, codes: set[int] | None) -> _Reach:
        return cls(codes=None if codes is None else frozenset(codes | {0}))

    def narrow(self, split: dict, *, left: bool) -> _Reach:
        if split["decision_type"] == "==":
            named = frozenset(categories_left(split))
            codes = self.codes or frozenset()
            return _Reach(nan=self.nan and not left, codes=codes & named if left else codes - named)
        t = float(split["threshold"])
        nan = self.nan and nan_goes_left(split) == left
        return _Reach(self.lo, min(self.hi, t), nan) if left else _Reach(max(self.lo, t), self.hi, nan)

    def possible(self) -> bool:
        return self.nan or (bool(self.codes) if self.codes is not None else self.lo < self.hi)

    def value(self) -> float:
        if self.nan:
            return math.nan
        if self.codes is not None:
            return float(min(self.codes))
        return self.hi if math.isfinite(self.hi) else float(np.nextafter(self.lo, np.inf))


def session(model_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, X: np.ndarray) -> dict[str, np.ndarray]:
    """The graph's outputs by name for a float64 feature matrix."""
    return dict(zip(OUTPUTS, sess.run(list(OUTPUTS), {INPUT: np.ascontiguousarray(X, dtype=np.float64)}),
                    strict=True))


def check(bundle: Bundle, sess: ort.InferenceSession) -> dict:
    """Run the graph on the bundle's canary rows (or, for bundles without them, an all-missing and an all-zero
    row) and on ``split_rows``, and compare with LightGBM's margin and the bundle's scorer; raise ExportError
    beyond ``MARGIN_TOLERANCE`` or ``PD_TOLERANCE``."""
    stored = bundle.metadata.get("canary")
    if stored is not None:
        canary = Canary.from_json(stored)
        rows, margin = canary.rows, canary.margin
    else:
        rows = np.vstack([np.full(len(bundle.feature_names), np.nan), np.zeros(len(bundle.feature_names))])
        margin = bundle.margin(rows)
    at_splits = split_rows(lightgbm_dump(bundle), len(bundle.feature_names))
    checks = {"canary": ("its canary rows" if stored is not None else "an all-missing and an all-zero row",
                         rows, margin),
              "splits": ("rows at, 1 ulp either side of and missing at each split", at_splits,
                         bundle.margin(at_splits))}
    measured = {}
    for key, (what, X, want_margin) in checks.items():
        want_pd, want_score, want_grade = bundle.scorer.apply(want_margin)
        got = run(sess, X)
        diffs = {"margin": float(np.max(np.abs(got["margin"] - want_margin))),
                 "PD": float(np.max(np.abs(got["pd"] - want_pd)))}
        for name, tolerance in (("margin", MARGIN_TOLERANCE), ("PD", PD_TOLERANCE)):
            if not diffs[name] <= tolerance:
                raise ExportError("--format", f"ONNX Runtime's {name} differs from the bundle's by {diffs[name]:.3g} "
                                              f"on {what} ({len(X)} rows; tolerance {tolerance:g}); not exported")
        measured[key] = {"rows": int(len(X)), "what": what, "max_abs_pd_difference": diffs["PD"],
                         "max_abs_margin_difference": diffs["margin"],
                         "scores_equal": bool(np.array_equal(got["score"], want_score)),
                         "grades_equal": bool(np.array_equal(got["grade"].astype(str), want_grade.astype(str)))}
    return measured | {
        "max_abs_pd_difference": max(m["max_abs_pd_difference"] for m in measured.values()),
        "max_abs_margin_difference": max(m["max_abs_margin_difference"] for m in measured.values()),
        "pd_tolerance": PD_TOLERANCE, "margin_tolerance": MARGIN_TOLERANCE,
        "trees": "ONNX-ML TreeEnsemble from LightGBM's model dump: float64 thresholds, leaves and sum",
        "scorer": "float64, the engine's formulas"}


def write(bundle: Bundle, bundle_folder: Path, out: Path) -> str:
    model_bytes = to_onnx(bundle).SerializeToString()
    precision = check(bundle, session(model_bytes))
    (out / MODEL_FILE).write_bytes(model_bytes)
    manifest = json.loads((bundle_folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    sidecar = OnnxExport(
        format="onnx", model_file=MODEL_FILE, model_sha256=sha256_file(out / MODEL_FILE),
        bundle_version=bundle.version, bundle_kind=bundle.kind,
        bundle_manifest_sha256=sha256_file(bundle_folder / MANIFEST_FILE), bundle_files=manifest["files"],
        input={"name": INPUT, "dtype": "float64", "shape": [None, len(bundle.feature_names)],
               "missing": "NaN", "categorical": "the category's index in the feature's 'categories' list",
               "features": [{k: f[k] for k in ("name", "internal", "categories", "label_en", "label_zh") if k in f}
                            for f in bundle.metadata["features"]]},
        outputs={"margin": "raw LightGBM margin (log-odds before calibration), float64 trees",
                 "pd": "calibrated probability of default: sigmoid(slope * margin + intercept)",
                 "score": "points: clip(round(offset - factor * logit), min_score, max_score)",
                 "grade": "grade name: the first band whose max_pd exceeds pd"},
        scorer=bundle.scorer.to_json() | {"offset": bundle.scorer.scaling.offset,
                                          "factor": bundle.scorer.scaling.factor},
        precision=precision,
        libraries={name: package_version(name) for name in ("onnx", "onnxruntime", "lightgbm")})
    (out / SIDECAR_FILE).write_bytes(sidecar.to_json())
    canary, splits = precision["canary"], precision["splits"]
    return (f"{MODEL_FILE} + {SIDECAR_FILE}: outputs margin, pd, score, grade; on {canary['rows']} rows "
            f"({canary['what']}) and {splits['rows']} at, 1 ulp either side of and missing at every split, ONNX "
            f"Runtime's margin is within {precision['max_abs_margin_difference']:.2g} of LightGBM's and its PD "
            f"within {precision['max_abs_pd_difference']:.2g} of the bundle's")
