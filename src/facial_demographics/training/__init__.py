"""Training: configs, models, data from the aligned-face cache, the loop, checkpoints and ONNX export.

This package needs the ``train`` extra (torch, kornia, onnx); nothing outside it imports it, and
importing the package itself does not import torch. The command line lives in
:mod:`facial_demographics.commands.train`.
"""
