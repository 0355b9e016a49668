"""Inverse problems: forward operators, the layer-wise ILO/SGILO loop, losses and metrics."""
