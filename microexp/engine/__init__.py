"""Training engine: plain train/evaluate functions (``trainer``) and, on top, the experiment runner."""
