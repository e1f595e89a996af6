"""slime.tools: Visualize the behavioural space, export trained slime models (ONNX, torch.export), package a standalone executable."""

__all__: list[str] = []
