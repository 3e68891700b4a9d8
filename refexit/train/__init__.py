"""Training and evaluation on a frozen backbone: cached per-layer features (features.py), the exit
heads' training (exits.py), and accuracy / speed-up evaluation of exit policies (evaluate.py).
Nothing here imports the compiler."""
