"""Target backends (installed as ``edgeq.targets``): each emits, validates and profiles its artifacts."""
