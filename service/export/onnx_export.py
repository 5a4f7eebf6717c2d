"""A bundle as ONNX: the LightGBM trees converted by onnxmltools, then the bundle's scorer as ONNX operators.

The graph (input ``features``: float64, shape (n, F), the bundle's feature order, categories as their index in
export.json's list, NaN = missing):

    features -> Cast(float) -> TreeEnsembleRegressor (onnxmltools' trees, no post-transform) -> margin
    margin -> slope * margin + intercept = logit -> Sigmoid -> pd
    logit -> Round(offset - factor * logit) -> Clip(min, max) -> score
    pd -> number of grade bounds <= pd -> Gather(grade names) -> grade

The scorer runs in float64 with the engine's formulas (service/scoring/score.py), so pd, score and grade are the
bundle's own. The trees are ONNX-ML's: thresholds and leaf sums in float32, where LightGBM uses float64; the
margin therefore differs by about 1e-7, and a value within float32 rounding of a split threshold could take
the other branch. Every export is run in ONNX Runtime on the bundle's canary rows (stored at training time,
one of them all-missing) and refused unless the PDs agree with the bundle's to ``PD_TOLERANCE``; export.json
records the differences measured. TreeSHAP contributions are not in the graph: use the MLflow export or
``service.notebook`` for them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxmltools.convert.common.data_types import FloatTensorType

from service.export import ExportError
from service.scoring.bundle import MANIFEST_FILE, Bundle, Canary, canonical_json, sha256_file
from service.scoring.score import Scorer

MODEL_FILE = "model.onnx"
SIDECAR_FILE = "export.json"
INPUT = "features"
OUTPUTS = ("margin", "pd", "score", "grade")
OPSET = 15  # the highest onnxmltools 1.16 converts to
PD_TOLERANCE = 1e-6
ONNX_TREE_OP = "TreeEnsembleClassifier"



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
    precision: dict  # what was checked at export: rows, largest differences, tolerance
    libraries: dict[str, str]

    def to_json(self) -> bytes:
        return canonical_json(asdict(self))

    @classmethod
    def read(cls, folder: Path) -> OnnxExport:
        return cls(**json.loads((folder / SIDECAR_FILE).read_text(encoding="utf-8")))


def to_onnx(bundle: Bundle) -> onnx.ModelProto:
    """The bundle's trees and scorer as one ONNX model (see the module docstring)."""
    n_features = len(bundle.feature_names)
    converted = onnxmltools.convert_lightgbm(bundle.booster, initial_types=[
        ("trees_input", FloatTensorType([None, n_features]))], zipmap=False, target_opset=OPSET)
    trees = [n for n in converted.graph.node if n.op_type == ONNX_TREE_OP]
    if len(trees) != 1:
        raise ExportError("--format", f"onnxmltools gave {len(trees)} {ONNX_TREE_OP} nodes, expected 1")
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
        helper.make_node("Cast", [INPUT], ["features_f32"], to=TensorProto.FLOAT),
        _as_regressor(trees[0], "features_f32", "tree_margin"),
        helper.make_node("Cast", ["tree_margin"], ["margin_2d"], to=TensorProto.DOUBLE),
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
    ml_opset = next(o.version for o in converted.opset_import if o.domain == "ai.onnx.ml")
    model = helper.make_model(graph, producer_name="smecredit", opset_imports=[
        helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ml_opset)])
    model.ir_version = converted.ir_version if converted.ir_version >= 8 else 8
    model.doc_string = (f"smecredit model {bundle.version}: margin, calibrated pd, score points and grade from "
                        f"features in float64 (order and categories in {SIDECAR_FILE})")
    helper.set_model_props(model, {"smecredit.bundle_version": bundle.version,
                                   "smecredit.features": json.dumps(list(bundle.feature_names), ensure_ascii=False)})
    onnx.checker.check_model(model)
    return model


def _as_regressor(classifier: onnx.NodeProto, source: str, target: str) -> onnx.NodeProto:
    """onnxmltools writes a binary LightGBM model as a TreeEnsembleClassifier with a logistic post-transform;
    the same trees as a TreeEnsembleRegressor without one give the raw margin, which calibration needs."""
    attrs = {a.name: helper.get_attribute_value(a) for a in classifier.attribute}
    if attrs.get("post_transform", b"").decode() != "LOGISTIC" or list(attrs.get("classlabels_int64s", [])) != [0, 1]:
        raise ExportError("--format", "onnxmltools did not convert a binary model with a logistic output; cannot take "
                              "its margin")
    if set(attrs["class_ids"]) != {0}:
        raise ExportError("--format", "a binary model's leaves must all add to one score")
    node_attrs = {k: v for k, v in attrs.items() if k.startswith("nodes_")}
    node_attrs["nodes_modes"] = [m.decode() for m in node_attrs["nodes_modes"]]
    return helper.make_node(
        "TreeEnsembleRegressor", [source], [target], domain="ai.onnx.ml", name="lightgbm_trees", n_targets=1,
        post_transform="NONE", aggregate_function="SUM", target_ids=attrs["class_ids"],
        target_nodeids=attrs["class_nodeids"], target_treeids=attrs["class_treeids"],
        target_weights=attrs["class_weights"], **node_attrs)


def session(model_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, X: np.ndarray) -> dict[str, np.ndarray]:
    """The graph's outputs by name for a float64 feature matrix."""
    return dict(zip(OUTPUTS, sess.run(list(OUTPUTS), {INPUT: np.ascontiguousarray(X, dtype=np.float64)}),
                    strict=True))


def check(bundle: Bundle, sess: ort.InferenceSession) -> dict:
    """Run the graph on the bundle's canary rows (or, for bundles without one, an all-missing and an all-zero
    row) and compare with the bundle's own outputs; raise ExportError beyond ``PD_TOLERANCE``."""
    stored = bundle.metadata.get("canary")
    if stored is not None:
        canary = Canary.from_json(stored)
        rows, margin = canary.rows, canary.margin
    else:
        rows = np.vstack([np.full(len(bundle.feature_names), np.nan), np.zeros(len(bundle.feature_names))])
        margin = bundle.contributions(rows).sum(axis=1)
    want_pd, want_score, want_grade = bundle.scorer.apply(margin)
    got = run(sess, rows)
    pd_diff = float(np.max(np.abs(got["pd"] - want_pd)))
    margin_diff = float(np.max(np.abs(got["margin"] - margin)))
    if not pd_diff <= PD_TOLERANCE:
        raise ExportError("--format", f"ONNX Runtime's PD differs from the bundle's by {pd_diff:.3g} on its "
                                      f"canary rows (tolerance {PD_TOLERANCE:g}); not exported")
    grades_equal = bool(np.array_equal(got["grade"].astype(str), want_grade.astype(str)))
    return {"checked_on": "canary rows" if stored is not None else "an all-missing and an all-zero row",
            "rows": int(len(rows)), "max_abs_pd_difference": pd_diff, "max_abs_margin_difference": margin_diff,
            "scores_equal": bool(np.array_equal(got["score"], want_score)), "grades_equal": grades_equal,
            "pd_tolerance": PD_TOLERANCE,
            "trees": "ONNX-ML TreeEnsembleRegressor: float32 thresholds and sums (LightGBM: float64)",
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
        outputs={"margin": "raw LightGBM margin (log-odds before calibration), float64 from float32 trees",
                 "pd": "calibrated probability of default: sigmoid(slope * margin + intercept)",
                 "score": "points: clip(round(offset - factor * logit), min_score, max_score)",
                 "grade": "grade name: the first band whose max_pd exceeds pd"},
        scorer=bundle.scorer.to_json() | {"offset": bundle.scorer.scaling.offset,
                                          "factor": bundle.scorer.scaling.factor},
        precision=precision,
        libraries={name: package_version(name) for name in ("onnx", "onnxmltools", "onnxruntime", "lightgbm")})
    (out / SIDECAR_FILE).write_bytes(sidecar.to_json())
    return (f"{MODEL_FILE} + {SIDECAR_FILE}: outputs margin, pd, score, grade; on {precision['rows']} "
            f"{precision['checked_on']} ONNX Runtime's PD is within {precision['max_abs_pd_difference']:.2g} of "
            "the bundle's")
